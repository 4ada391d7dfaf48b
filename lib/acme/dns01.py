"""Publishing dns-01 TXT values: through the gateway's native API, or an in-process provider.

Both solvers take every value of an order at once, so that ``example.com`` and
``*.example.com`` (two values at one name) are published together, and return
only when the CA may look:

* :class:`GatewaySolver` POSTs ``{"argument": "setup", "domain_name",
  "challenge_content"}`` to the gateway (basic auth, HTTPS with an optional CA
  file) and takes ``201`` as "served by every authoritative nameserver": the
  gateway waits for propagation itself. With ``--propagation-nameservers`` the
  client checks those servers too (split horizon: what the CA sees may not be
  what the gateway sees).
* :class:`ProviderSolver` runs any :class:`providers.base.Provider` in this
  process, on an event loop in a background thread (the builtin provider must
  keep answering DNS while the main thread talks to the CA), serialises the
  changes to one name as the gateway does, and waits with
  :func:`lib.dnscheck.wait_for_txt` when the provider says a change is worth
  waiting for (:meth:`providers.base.Provider.awaits_propagation`, the gateway's
  rule too).

Teardown never raises: a value left behind is a warning, and stays listed in
:mod:`lib.acme.journal` for the next run to withdraw (through the gateway, its janitor
would too). Both solvers use only what the gateway and the providers publish: the native
API and its answers, and the :class:`providers.base.Provider` contract (``label`` names
a provider in messages). Passwords are never logged or shown.
"""

from __future__ import annotations

import abc
import asyncio
import base64
import concurrent.futures
import logging
import os
import secrets
import stat
import threading
from collections.abc import Callable, Coroutine, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import requests

from lib.acme.errors import SolverError, UsageError
from lib.acme.transport import describe_request_error, untrusted_certificate
from lib.dnscheck import PropagationError, PropagationSettings, wait_for_txt
from lib.names import challenge_name
from lib.settings import Settings
from providers.base import Provider, ProviderContext, ProviderError
from providers.registry import create_provider

log = logging.getLogger(__name__)

T = TypeVar("T")
Report = Callable[[str], None]

GATEWAY_TIMEOUT = 180.0
TEARDOWN_TIMEOUT = 30.0
PROVIDER_TIMEOUT = 60.0
_PARALLEL = 8


@dataclass(frozen=True)
class TxtRecord:
    """One dns-01 value for one authorization: *domain* is the identifier (no ``*.``)."""

    domain: str
    value: str

    @property
    def fqdn(self) -> str:
        return challenge_name(self.domain)


class Solver(abc.ABC):
    """Publishes and withdraws dns-01 values."""

    description = "dns-01"
    # Whether a value outlives this process when it is not withdrawn (then it is
    # journaled, for the next run to withdraw).
    outlives_process = True

    @abc.abstractmethod
    def setup(self, records: Sequence[TxtRecord], report: Report) -> None:
        """Publish every record; return once the CA can see them, or raise SolverError."""

    @abc.abstractmethod
    def teardown(self, records: Sequence[TxtRecord]) -> list[str]:
        """Withdraw every record; return the problems (never raises)."""

    @abc.abstractmethod
    def bound(self) -> float:
        """The longest :meth:`setup` may take, in seconds."""

    def close(self) -> None:  # noqa: B027 - optional
        """Release what the solver holds."""


def read_password_file(path: Path) -> str:
    """The gateway password from *path*, refused when group or others may read it."""
    try:
        info = path.stat()
        if info.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
            raise UsageError(f"{path} is readable by group or others; "
                             f"run: chmod 600 {path}")
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise UsageError(f"cannot read the gateway password file {path}: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise UsageError(f"the gateway password file {path} is not UTF-8 text") from None
    password = text[:-1] if text.endswith("\n") else text
    password = password[:-1] if password.endswith("\r") else password
    if not password:
        raise UsageError(f"the gateway password file {path} is empty")
    return password


@dataclass
class GatewaySolver(Solver):
    """The gateway's native API: one POST per value."""

    url: str
    user: str | None = None
    password: str | None = field(default=None, repr=False)
    ca_file: str | None = None
    timeout: float = GATEWAY_TIMEOUT
    propagation: PropagationSettings | None = None

    @property
    def description(self) -> str:  # type: ignore[override]
        return f"gateway {self.url}"

    def _call(self, argument: str, record: TxtRecord, what: str | None = None) -> None:
        """POST *argument* for *record*; *what* names the step in errors (the argument)."""
        what = what or argument
        auth = (self.user, self.password or "") if self.user else None
        # A teardown has no propagation to wait for; it may run after SIGTERM, before the
        # service manager's SIGKILL: keep it short.
        timeout = self.timeout if argument == "setup" else min(self.timeout, TEARDOWN_TIMEOUT)
        body = {"argument": argument, "domain_name": record.domain,
                "challenge_content": record.value}
        try:
            response = requests.post(self.url, json=body, auth=auth, timeout=(10, timeout),
                                     verify=self.ca_file or True, allow_redirects=False)
        except requests.exceptions.Timeout:
            raise SolverError(f"gateway {what} of {record.fqdn}: no answer within "
                              f"{timeout:g}s") from None
        except requests.exceptions.SSLError as exc:
            detail = describe_request_error(exc)
            hint = "" if self.ca_file or not untrusted_certificate(detail) \
                else ("; for a gateway whose certificate is not from a CA this system "
                      "trusts, pass --gateway-ca-file")
            raise SolverError(f"gateway {what} of {record.fqdn}: TLS with {self.url} "
                              f"failed ({detail}){hint}") from None
        except requests.exceptions.RequestException as exc:
            raise SolverError(f"gateway {what} of {record.fqdn}: cannot reach {self.url} "
                              f"({describe_request_error(exc)})") from None
        wanted = (200, 201) if argument == "setup" else (200,)
        if response.status_code in wanted:
            return
        raise SolverError(f"gateway {what} of {record.fqdn}: {_gateway_problem(response)}")

    def check(self, domains: Sequence[str], report: Report) -> None:
        """Before anything is ordered: is the gateway reachable, trusted, does it take the
        credentials, and may this user change every name? One teardown per name of a
        value never published (the gateway removes only the value it is given, so
        nothing of anyone else's is touched); each problem a :class:`SolverError`."""
        names = list(dict.fromkeys(d.removeprefix("*.") for d in domains))
        probes = [TxtRecord(name, _never_published()) for name in names]
        _in_parallel([lambda r=r: self._call("teardown", r, "check")  # type: ignore[misc]
                      for r in probes])
        report(f"the gateway {self.url} takes these credentials for "
               f"{', '.join(challenge_name(n) for n in names)}")

    def bound(self) -> float:
        own = self.propagation.timeout if self.propagation and self.propagation.nameservers \
            else 0.0
        return self.timeout + own

    def setup(self, records: Sequence[TxtRecord], report: Report) -> None:
        _in_parallel([lambda r=r: self._call("setup", r) for r in records])  # type: ignore[misc]
        report(f"the gateway published {len(records)} value(s) (it answers once every "
               "authoritative nameserver serves them)")
        if self.propagation is not None and self.propagation.nameservers:
            servers = asyncio.run(_served_by(records, self.propagation))
            report(f"every value is served by {', '.join(servers)}")

    def teardown(self, records: Sequence[TxtRecord]) -> list[str]:
        problems: list[str] = []
        for record in records:
            try:
                self._call("teardown", record)
            except SolverError as exc:
                problems.append(str(exc))
        return problems


def _never_published() -> str:
    """A dns-01-shaped value no one ever published (43 random base64url characters)."""
    return base64.urlsafe_b64encode(secrets.token_bytes(32)).decode().rstrip("=")


def _gateway_problem(response: requests.Response) -> str:
    status = response.status_code
    message = ""
    try:
        doc = response.json()
        if isinstance(doc, dict):
            message = str(doc.get("message") or doc.get("error") or "")
    except ValueError:
        message = response.text.strip().splitlines()[0] if response.text.strip() else ""
    message = message[:300]
    hints = {
        401: "the gateway refused the credentials: check --gateway-user and "
             "--gateway-password-file",
        403: "this gateway user may not change that name: see the user's domains in acmepasswd",
        429: "too many failed logins from this address; wait and check the password",
    }
    text = f"HTTP {status}"
    if message:
        text += f": {message}"
    if status in hints:
        text += f" ({hints[status]})"
    return text


def _in_parallel(calls: Sequence[Callable[[], None]]) -> None:
    """Run *calls* on a few threads; raise the first SolverError after all have finished."""
    if not calls:
        return
    with concurrent.futures.ThreadPoolExecutor(min(_PARALLEL, len(calls))) as pool:
        futures = [pool.submit(call) for call in calls]
    errors = [f.exception() for f in futures if f.exception() is not None]
    if errors:
        first = errors[0]
        assert first is not None
        if len(errors) > 1:
            raise SolverError(f"{first} (and {len(errors) - 1} more)") from first
        raise first


async def _served_by(records: Sequence[TxtRecord], settings: PropagationSettings) -> list[str]:
    """Wait until every record is served where *settings* say; the servers that serve them."""
    try:
        served = await asyncio.gather(*(wait_for_txt(r.fqdn, r.value, settings)
                                        for r in records))
    except PropagationError as exc:
        raise SolverError(f"propagation: {exc}") from None
    return sorted({s for group in served for s in group})


class _LoopThread:
    """An event loop on its own thread, for async providers driven from sync code."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name="acmegw-acme-dns",
                                        daemon=True)
        self._thread.start()

    def run(self, coro: Coroutine[Any, Any, T], timeout: float) -> T:
        future = asyncio.run_coroutine_threadsafe(coro, self.loop)
        try:
            return future.result(timeout)
        except concurrent.futures.TimeoutError:
            future.cancel()
            raise SolverError(f"the DNS provider did not finish within {timeout:g}s") from None
        except BaseException:
            # Interrupted (Ctrl-C, SIGTERM): stop the change before the teardown that
            # follows runs, so that calls for one name still never overlap.
            future.cancel()
            raise

    def close(self) -> None:
        async def cancel_rest() -> None:
            tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await self.loop.shutdown_asyncgens()

        if self._thread.is_alive():
            asyncio.run_coroutine_threadsafe(cancel_rest(), self.loop).result(10)
            self.loop.call_soon_threadsafe(self.loop.stop)
            self._thread.join(10)
        self.loop.close()


class ProviderSolver(Solver):
    """A provider of ours (``PROVIDER=...``) running inside this process."""

    def __init__(self, provider: Provider, propagation: PropagationSettings,
                 timeout: float = PROVIDER_TIMEOUT) -> None:
        self.provider = provider
        self.propagation = propagation
        self.timeout = timeout
        self.wait = provider.awaits_propagation(propagation.nameservers)
        # The builtin server's values end with this process: nothing to withdraw later.
        self.outlives_process = not provider.volatile
        self._loop = _LoopThread()
        try:
            self._loop.run(provider.open(), timeout)
        except (ProviderError, OSError) as exc:
            self._loop.close()
            raise SolverError(f"{provider.label}: cannot start: {exc}") from None
        except BaseException:
            self._loop.close()
            raise

    @property
    def description(self) -> str:  # type: ignore[override]
        return f"provider {self.provider.label}"

    async def _change(self, records: Sequence[TxtRecord], add: bool) -> None:
        by_name: dict[str, list[TxtRecord]] = {}
        for record in records:
            by_name.setdefault(record.fqdn, []).append(record)

        async def one_name(items: list[TxtRecord]) -> None:
            # The provider contract: calls for one name never overlap.
            for item in items:
                change = self.provider.add_txt if add else self.provider.remove_txt
                await asyncio.wait_for(change(item.fqdn, item.value), self.timeout)

        await asyncio.gather(*(one_name(items) for items in by_name.values()))

    def bound(self) -> float:
        return self.timeout * 2 + (self.propagation.timeout + 10 if self.wait else 0.0)

    def setup(self, records: Sequence[TxtRecord], report: Report) -> None:
        try:
            self._loop.run(self._change(records, True), self.timeout * 2)
        except ProviderError as exc:
            raise SolverError(str(exc)) from None
        except TimeoutError:
            raise SolverError(
                f"{self.provider.label}: no answer within {self.timeout:g}s") from None
        report(f"{self.provider.label} published {len(records)} value(s)")
        if not self.wait:
            return
        servers = self._loop.run(_served_by(records, self.propagation),
                                 self.propagation.timeout + 10)
        report(f"every value is served by {', '.join(servers)}")

    def teardown(self, records: Sequence[TxtRecord]) -> list[str]:
        try:
            self._loop.run(self._change(records, False), self.timeout * 2)
        except (ProviderError, SolverError, TimeoutError) as exc:
            return [f"{self.provider.label}: teardown: {exc or 'timed out'}"]
        return []

    def close(self) -> None:
        try:
            self._loop.run(self.provider.aclose(), self.timeout)
        except (ProviderError, SolverError) as exc:
            log.warning("closing the provider: %s", exc)
        finally:
            self._loop.close()


def provider_solver(env: Mapping[str, str], domains: Sequence[str],
                    propagation: PropagationSettings, provider_name: str | None = None
                    ) -> ProviderSolver:
    """Build the provider configured in *env* (``PROVIDER=...`` and its settings).

    *domains* become the managed domains (the builtin provider serves their
    ``_acme-challenge`` names). Raises UsageError listing every settings problem.
    """
    provider, _, _ = _provider(env, domains, provider_name)
    return ProviderSolver(provider, propagation)


@dataclass(frozen=True)
class KeptSettings:
    """What a renewal needs of a provider's settings, read when the certificate is issued.

    ``values``: every setting the provider read, except secrets (a secret is kept by
    reference only: its ``<KEY>_FILE`` path) and proxy URLs (the environment's business).
    ``secrets_from_environment``: the secrets that were given directly in the
    environment, which a renewal can only find in its own environment.
    """

    values: dict[str, str]
    secrets_from_environment: tuple[str, ...]


def provider_settings(env: Mapping[str, str], domains: Sequence[str],
                      provider_name: str | None = None) -> KeptSettings:
    """Check the provider's settings without starting it (UsageError listing every
    problem) and say what a renewal must keep of them."""
    _, settings, values = _provider(env, domains, provider_name)
    keep = {key: values[key] for key in sorted(settings.asked)
            if (values.get(key) or "").strip() and key not in settings.secret_keys
            and key.upper() not in _PROXY_KEYS and not _has_userinfo(values[key])}
    direct = tuple(sorted(key for key in settings.secret_keys if (values.get(key) or "").strip()))
    return KeptSettings(keep, direct)


def _provider(env: Mapping[str, str], domains: Sequence[str], provider_name: str | None
              ) -> tuple[Provider, Settings, dict[str, str]]:
    values = dict(env)
    if provider_name:
        values["PROVIDER"] = provider_name
    settings = Settings(values)
    bases = tuple(dict.fromkeys(d.removeprefix("*.") for d in domains))
    context = ProviderContext(managed_domains=bases, timeout=PROVIDER_TIMEOUT,
                              state_dir=Path(values["STATE_DIR"]) if values.get("STATE_DIR")
                              else None)
    provider = create_provider(settings, context)
    if provider is None or settings.problems:
        raise UsageError("DNS provider settings: " + "; ".join(settings.problems or
                                                               ["no provider"]))
    return provider, settings, values


_PROXY_KEYS = frozenset({"ALL_PROXY", "HTTPS_PROXY", "HTTP_PROXY", "NO_PROXY"})


def _has_userinfo(value: str) -> bool:
    """A URL with a user (and perhaps a password) in it: never kept on disk."""
    return "://" in value and "@" in value.split("://", 1)[1].split("/", 1)[0]


def environment() -> dict[str, str]:
    """The process environment (a function so callers and tests can see where it is read)."""
    return dict(os.environ)
