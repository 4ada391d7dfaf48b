"""``acmegw-server --check-delegation NAME``: will the CA find what this gateway writes?

With the running configuration (the same settings sources), for
``_acme-challenge.NAME`` it reports, in the order a CA's resolver finds them:

1. **The CNAME.** Whether the public DNS (the resolvers of ``PROPAGATION_RESOLVERS``,
   else ``/etc/resolv.conf``) has one there and whether it is the one ``DELEGATIONS``
   names: the gateway writes the CNAME's target when ``DELEGATIONS`` names one for
   NAME, and the ``_acme-challenge`` name itself otherwise.
2. **The zone.** Which zone and nameservers the public DNS give for the name the
   gateway writes. For a provider that is itself the authoritative server (builtin),
   whether that zone is delegated to it: its NS names must be ``BUILTIN_NS``.
3. **The provider.** Whether it can write there: a probe value is written through it
   (journaled first, as every record is, so that a crash leaves it to the janitor),
   awaited on every authoritative server — or on ``PROPAGATION_NAMESERVERS`` — exactly
   as a setup waits, and removed. When the builtin server cannot start here because a
   running gateway holds its address, the nameservers are asked instead whether they
   answer for the zone with authority.

Every wrong finding comes with what to change ("add `_acme-challenge.example.com.
CNAME x.acme.example.net.`"). Exit status: 0 when everything is right, 1 when
something is wrong, 2 for a name the configuration does not manage or a journal
that cannot be written (run it as the gateway's user).
"""

from __future__ import annotations

import asyncio
import base64
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass, replace

from gateway.config import Config
from gateway.errors import GatewayError
from gateway.journal import Journal
from gateway.state import state_for
from lib.dnscheck import (
    Authority,
    DiscoveryError,
    NoZoneError,
    PropagationError,
    PropagationSettings,
    PropagationTimeout,
    answers_for,
    authoritative_servers,
    public_alias,
    wait_for_txt,
)
from lib.names import InvalidName, base_name, challenge_name, is_within, normalize_name
from providers.base import Provider, ProviderError

# Who the journal says wrote the probe (never a user name: it contains a space).
PROBE_OWNER = "check delegation"


class UsageError(Exception):
    """The check cannot be made (exit status 2)."""


@dataclass
class Report:
    """The findings, printed as they are made (a probe may take a while)."""

    out: Callable[[str], None]
    wrong: int = 0

    def ok(self, text: str) -> None:
        self.out(f"  ok     {text}")

    def note(self, text: str) -> None:
        self.out(f"  info   {text}")

    def bad(self, text: str, fix: str) -> None:
        self.wrong += 1
        self.out(f"  WRONG  {text}")
        self.out(f"         fix: {fix}")


def main(name: str, config: Config, provider: Provider) -> int:
    """The command: the report on stdout, the exit status returned."""
    return asyncio.run(run(name, config, provider, lambda line: print(line, flush=True)))


async def run(
    name: str, config: Config, provider: Provider, out: Callable[[str], None], *, port: int = 53
) -> int:
    """Check NAME and report through *out*; 0 right, 1 wrong, 2 not possible.

    *port* is where discovered nameservers are asked (53; tests put every server on
    127.0.0.0/8 with a port of its own).
    """
    report = Report(out)
    try:
        await check(name, config, provider, report, port=port)
    except UsageError as exc:
        print(f"acmegw-server: --check-delegation: {exc}", file=sys.stderr)
        return 2
    if report.wrong:
        out(f"wrong: {report.wrong} thing(s) to change, above")
        return 1
    out("right: the CA will find the values this gateway writes")
    return 0


def managed_base(name: str, config: Config) -> str:
    """The base name NAME stands for, if this configuration manages its challenge name."""
    try:
        base = base_name(normalize_name(name))
    except InvalidName as exc:
        raise UsageError(f"{name!r} is not a domain name: it {exc}") from None
    if not any(is_within(challenge_name(base), d) for d in config.managed_domains):
        raise UsageError(
            f"{base} is not a name this gateway manages "
            f"(DNSAPI_DOMAINS: {', '.join(config.managed_domains)})"
        )
    return base


async def check(
    name: str, config: Config, provider: Provider, report: Report, *, port: int = 53
) -> None:
    base = managed_base(name, config)
    challenge = challenge_name(base)
    target = dict(config.delegations).get(base)
    fqdn = target or challenge  # where the gateway writes NAME's values
    wait = replace(config.propagation.wait, port=port)
    resolvers = wait.resolvers or None
    report.out(
        f"{challenge}: the gateway writes "
        + (f"{fqdn} (DELEGATIONS)" if target else "it")
        + f" through {provider.label}; public DNS: "
        + (", ".join(wait.resolvers) if wait.resolvers else "the resolvers of /etc/resolv.conf")
    )
    await _check_alias(base, challenge, target, resolvers, wait, report)
    authority = await _check_zone(fqdn, resolvers, wait, report)
    delegated = True
    if provider.serves_itself:
        delegated = _check_self_served(fqdn, authority, provider, report)
    if not delegated:
        report.note("no probe value written: the delegation above must be fixed first")
        return
    await _probe(fqdn, config, provider, wait, authority, report)


async def _check_alias(
    base: str,
    challenge: str,
    target: str | None,
    resolvers: tuple[str, ...] | None,
    wait: PropagationSettings,
    report: Report,
) -> None:
    try:
        alias = await public_alias(
            challenge, resolver_nameservers=resolvers, query_timeout=wait.query_timeout
        )
    except DiscoveryError as exc:
        report.bad(
            f"the public DNS gives no answer for {challenge}: {exc}",
            "make sure its nameservers answer (and PROPAGATION_RESOLVERS, if set, is right)",
        )
        return
    if target is not None:
        if alias == target:
            report.ok(f"{challenge} is a CNAME to {target}, as DELEGATIONS says")
        elif alias is None:
            report.bad(
                f"{challenge} is not a CNAME, but DELEGATIONS sends its values to {target}",
                f"add `{challenge}. CNAME {target}.`",
            )
        else:
            report.bad(
                f"{challenge} is a CNAME to {alias}, but DELEGATIONS says {target}",
                f"change it to `{challenge}. CNAME {target}.` (or DELEGATIONS to {base}={alias})",
            )
    elif alias is None:
        report.ok(f"{challenge} is not a CNAME: the gateway writes it itself")
    else:
        report.bad(
            f"{challenge} is a CNAME to {alias}, but the gateway writes {challenge} itself "
            f"(DELEGATIONS names no target for {base})",
            f"set DELEGATIONS={base}={alias} if the gateway may write {alias}, "
            "or remove the CNAME",
        )


async def _check_zone(
    fqdn: str, resolvers: tuple[str, ...] | None, wait: PropagationSettings, report: Report
) -> Authority | None:
    listed = ", ".join(wait.nameservers)
    try:
        authority = await authoritative_servers(
            fqdn, resolver_nameservers=resolvers, port=wait.port, query_timeout=wait.query_timeout
        )
    except DiscoveryError as exc:
        if wait.nameservers:
            report.note(f"{exc}; the gateway asks PROPAGATION_NAMESERVERS ({listed}) instead")
        elif isinstance(exc, NoZoneError):
            report.bad(str(exc), exc.hint())
        else:
            report.bad(
                f"cannot find the nameservers of {fqdn}: {exc}",
                "check the zone's NS records and their addresses",
            )
        return None
    report.note(
        f"{fqdn} is in zone {authority.zone}, served by {', '.join(authority.ns_names)} "
        f"({', '.join(authority.servers)})"
    )
    if wait.nameservers:
        report.note(f"the gateway waits for PROPAGATION_NAMESERVERS ({listed}) instead")
    return authority


def _check_self_served(
    fqdn: str, authority: Authority | None, provider: Provider, report: Report
) -> bool:
    """For the builtin server: is the zone it serves for *fqdn* delegated to it?"""
    expected = provider.delegation_for(fqdn)
    if expected is None or authority is None:
        return True  # the probe says why the provider cannot write there
    apex, names = expected
    delegation = "; ".join(f"`{apex}. NS {n}.`" for n in names)
    found = ", ".join(authority.ns_names)
    if authority.zone == apex:
        if set(authority.ns_names) == set(names):
            report.ok(
                f"{apex} is delegated to {', '.join(names)} (BUILTIN_NS): the gateway's "
                "own DNS server"
            )
            return True
        report.bad(
            f"the NS for {apex} points at {found} but BUILTIN_NS says {', '.join(names)}",
            f"make the delegation {delegation} (or, if {found} is this gateway, "
            f"set BUILTIN_NS={','.join(authority.ns_names)})",
        )
        return False
    if is_within(apex, authority.zone):
        report.bad(
            f"{apex} is not delegated to the gateway: it lies in zone {authority.zone}, "
            f"served by {found}",
            f"add {delegation} to zone {authority.zone}",
        )
    else:
        report.bad(
            f"{fqdn} lies in zone {authority.zone} (served by {found}), but the gateway "
            f"serves it in zone {apex}",
            f"delegate {apex} to the gateway: {delegation}",
        )
    return False


def _probe_value() -> str:
    """A value of the shape every provider takes (43 base64url characters)."""
    return base64.urlsafe_b64encode(os.urandom(32)).decode("ascii").rstrip("=")


async def _probe(
    fqdn: str,
    config: Config,
    provider: Provider,
    wait: PropagationSettings,
    authority: Authority | None,
    report: Report,
) -> None:
    state = state_for(config)
    try:
        await state.open()
    except GatewayError as exc:
        raise UsageError(
            f"cannot journal the probe value: {exc.logged} (run it as the gateway's user)"
        ) from None
    try:
        try:
            await asyncio.wait_for(provider.open(), config.provider_timeout)
        except (ProviderError, OSError, TimeoutError) as exc:
            await _cannot_open(provider, exc, authority, wait, report)
            return
        try:
            # As a change through the API would: no other gateway changes the name meanwhile.
            async with state.hold(fqdn) as journal:
                await _write_wait_remove(fqdn, config, provider, journal, wait, report)
        finally:
            await provider.aclose()
    finally:
        await state.close()


async def _cannot_open(
    provider: Provider,
    exc: BaseException,
    authority: Authority | None,
    wait: PropagationSettings,
    report: Report,
) -> None:
    reason = str(exc) or type(exc).__name__
    if not provider.serves_itself or authority is None:
        report.bad(
            f"{provider.label} could not be started here: {reason}",
            "see the message: the gateway could not start it either",
        )
        return
    # Most likely the running gateway holds the builtin server's address: ask the
    # nameservers whether they answer for the zone as its authority instead.
    answering = [s for s in authority.servers if await answers_for(s, authority.zone, 2.0)]
    if answering and len(answering) == len(authority.servers):
        report.ok(
            f"no probe: {reason} (a running gateway?); every nameserver of {authority.zone} "
            f"answers for it with authority ({', '.join(answering)})"
        )
    else:
        silent = [s for s in authority.servers if s not in answering]
        report.bad(
            f"no probe: {reason}; and {', '.join(silent)} do not answer for {authority.zone} "
            "with authority",
            "make sure the gateway runs and its BUILTIN_LISTEN is what the NS names reach",
        )


async def _write_wait_remove(
    fqdn: str,
    config: Config,
    provider: Provider,
    journal: Journal,
    wait: PropagationSettings,
    report: Report,
) -> None:
    value = _probe_value()
    await journal.begin_add(fqdn, value, PROBE_OWNER)
    added = False
    try:
        try:
            await asyncio.wait_for(provider.add_txt(fqdn, value), config.provider_timeout)
        except (ProviderError, TimeoutError) as exc:
            report.bad(
                f"{provider.label} cannot write {fqdn}: {exc or 'no answer in time'}",
                "see the provider's message (credentials, zone, the key's update policy)",
            )
            return
        added = True
        await journal.commit_add(fqdn, value)
        started = asyncio.get_running_loop().time()
        try:
            served = await wait_for_txt(fqdn, value, wait)
        except PropagationTimeout as exc:
            lagging = ", ".join(exc.lagging) or "its servers"
            report.bad(
                f"{provider.label} wrote a probe value at {fqdn}, but {lagging} did not serve "
                f"it within {wait.timeout:g}s",
                "the provider writes where these servers do not look: check that it "
                "updates the zone these nameservers serve (a hidden primary and its "
                "secondaries, a split horizon: PROPAGATION_NAMESERVERS)",
            )
        except PropagationError as exc:
            hint = exc.hint() if isinstance(exc, NoZoneError) else "see the message"
            report.bad(f"{provider.label} wrote a probe value at {fqdn}, but {exc}", hint)
        else:
            elapsed = asyncio.get_running_loop().time() - started
            report.ok(
                f"{provider.label} wrote a probe value at {fqdn}; served by "
                f"{', '.join(served)} after {elapsed:.1f}s"
            )
    finally:
        await journal.begin_remove(fqdn, value)
        try:
            await asyncio.wait_for(provider.remove_txt(fqdn, value), config.provider_timeout)
        except (ProviderError, TimeoutError) as exc:
            if added:
                report.bad(
                    f"{provider.label} could not remove the probe value at {fqdn}: "
                    f"{exc or 'no answer in time'}",
                    "the gateway's janitor removes it later (it is journaled)",
                )
            # Else it was most likely never written; the journal keeps it for the janitor.
        else:
            await journal.commit_remove(fqdn, value)
            if added:
                report.ok("the probe value is removed")
