"""The one path every API takes to change a TXT record.

Native, lego httpreq and acme-dns requests all end here: the name is checked
against the managed domains and the caller's own domains, the change is
serialised per name, journaled, sent to the provider with a deadline, and a
setup waits until the value is served before it is confirmed. One audit line
per change: who, from where, which name, a short hash of the value, result and
duration — never the value itself or a secret.
"""

from __future__ import annotations

import asyncio
import logging
import time
import weakref
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Literal

from gateway.auth import Identity
from gateway.config import PropagationConfig
from gateway.errors import (
    BadRequest,
    Forbidden,
    GatewayError,
    TooManyRecords,
    UpstreamFailed,
    UpstreamTimeout,
)
from gateway.journal import Journal
from gateway.metrics import Metrics
from gateway.shutdown import stop_tasks
from gateway.state import State
from lib.dnscheck import NoZoneError, PropagationError, PropagationTimeout, wait_for_txt
from lib.names import (
    InvalidName,
    base_name,
    challenge_name,
    is_within,
    normalize_name,
    value_tag,
)
from providers.base import Provider, ProviderError, ProviderTimeout

log = logging.getLogger(__name__)
audit = logging.getLogger("acmegw.audit")

MAX_NAME = 253  # characters in a DNS name in text form, without the final dot


class NameLocks:
    """Changes to one name, one at a time: first among this process's requests (an
    asyncio lock per name, dropped when nobody holds or waits for it), then among
    every process on the same state (the state layer's lock for the name).

    :meth:`hold` yields the journal to write the change with.
    """

    def __init__(self, state: State) -> None:
        self.state = state
        self._locks: weakref.WeakValueDictionary[str, asyncio.Lock] = weakref.WeakValueDictionary()

    @asynccontextmanager
    async def hold(self, name: str) -> AsyncIterator[Journal]:
        lock = self._locks.get(name)
        if lock is None:
            lock = asyncio.Lock()
            self._locks[name] = lock
        async with lock, self.state.hold(name) as journal:
            yield journal

    def __len__(self) -> int:
        return len(self._locks)


class LateCalls:
    """Provider calls the gateway stopped waiting for, per (fqdn, value), until they end.

    Such a call may still write: a thread cannot be stopped, and a cancelled
    request may already be on the wire. While one runs, its value stays
    journaled; when the last one for a value ends, *on_end* is told whether any
    of them was a removal.
    """

    def __init__(self) -> None:
        self._calls: dict[tuple[str, str], set[asyncio.Task[None]]] = {}
        self._removals: set[tuple[str, str]] = set()

    def track(
        self,
        fqdn: str,
        value: str,
        task: asyncio.Task[None],
        removal: bool,
        on_end: Callable[[str, str, bool], None] | None,
    ) -> None:
        key = (fqdn, value)
        self._calls.setdefault(key, set()).add(task)
        if removal:
            self._removals.add(key)

        def ended(task: asyncio.Task[None]) -> None:
            calls = self._calls[key]
            calls.discard(task)
            if calls:
                return
            del self._calls[key]
            any_removal = key in self._removals
            self._removals.discard(key)
            if on_end is not None:
                on_end(fqdn, value, any_removal)

        task.add_done_callback(ended)

    def __contains__(self, key: object) -> bool:
        return key in self._calls

    def stop_waiting(self) -> None:
        """Shutdown: give up on them; their values stay journaled for the janitor."""
        for calls in self._calls.values():
            for task in calls:
                task.cancel()


@dataclass(frozen=True)
class Change:
    """The outcome of a change, for the API's answer."""

    fqdn: str
    values: tuple[str, ...]


class ChallengeService:
    """Validates, serialises, journals and performs TXT changes."""

    def __init__(
        self,
        provider: Provider,
        state: State,
        managed_domains: tuple[str, ...],
        propagation: PropagationConfig,
        provider_timeout: float,
        delegations: tuple[tuple[str, str], ...] = (),
        max_records: int = 0,
    ) -> None:
        self.provider = provider
        self.max_records = max_records
        self.set_delegations(delegations)
        self.state = state
        self.journal = state.journal
        self.managed_domains = managed_domains
        self.propagation = propagation
        self.provider_timeout = provider_timeout
        self.update_propagation()
        self.locks = NameLocks(state)
        self.late = LateCalls()
        self._settling: set[asyncio.Task[None]] = set()
        self._closing = False
        self.metrics: Metrics | None = None

    def set_delegations(self, delegations: tuple[tuple[str, str], ...]) -> None:
        # base name -> the record name its _acme-challenge is CNAMEd to, and back.
        self.delegated_to = dict(delegations)
        self.delegated_from = {target: name for name, target in delegations}

    def update_propagation(self) -> None:
        self.check_propagation = self.propagation.check and self.provider.awaits_propagation(
            self.propagation.nameservers
        )

    # -- names -------------------------------------------------------------

    def challenge_fqdn(self, identity: Identity, name: object, field: str = "domain_name") -> str:
        """The ``_acme-challenge`` name for *name*, if *identity* may change it."""
        base = _requested_name(name, field)
        fqdn = challenge_name(base)
        if len(fqdn) > MAX_NAME:
            # The base name fits, but not once "_acme-challenge." is put in front.
            raise BadRequest(field, f"invalid name: {fqdn[:40]}... is longer than 253 characters")
        self.authorize(identity, fqdn)
        # A delegated name's value lives at its CNAME target, which we write instead.
        return self.delegated_to.get(base_name(fqdn), fqdn)

    def record_fqdn(self, identity: Identity, name: object, field: str = "fqdn") -> str:
        """A full record name as a client sends it (lego httpreq): an ``_acme-challenge``
        name, or the configured delegation target of a name *identity* may change."""
        fqdn = _requested_name(name, field)
        if isinstance(name, str) and name.lstrip().startswith("*"):
            raise BadRequest(field, "a record name has no wildcard")
        source = self.delegated_from.get(fqdn)
        if source is not None:
            self.authorize(identity, challenge_name(source))
            return fqdn
        if base_name(fqdn) == fqdn:
            raise BadRequest(field, "must be an _acme-challenge name or a delegation target")
        self.authorize(identity, fqdn)
        return self.delegated_to.get(base_name(fqdn), fqdn)

    def authorize(self, identity: Identity, fqdn: str) -> None:
        """Refuse names outside the managed domains or the caller's own domains.

        The answer names neither list: a caller learns nothing about other
        users' domains.
        """
        why = None
        if not any(is_within(fqdn, d) for d in self.managed_domains):
            why = "outside DNSAPI_DOMAINS"
        elif identity.domains is not None and not any(
            is_within(fqdn, d) for d in identity.domains
        ):
            why = f"outside the user's domains ({', '.join(identity.domains)})"
        if why is not None:
            raise Forbidden(f"{fqdn} is not a name you may change", name=fqdn, detail=why)

    # -- changes -----------------------------------------------------------

    async def add(
        self,
        identity: Identity,
        fqdn: str,
        value: str,
        still_allowed: Callable[[], Awaitable[None]] | None = None,
    ) -> Change:
        """Publish *value* at *fqdn*; *still_allowed* raises to refuse the change once
        the name's lock is held, before anything is written (a credential that may
        have been withdrawn meanwhile, on any replica)."""
        async with self._audited(identity, "add", fqdn, [value]):
            async with self.locks.hold(fqdn) as journal:
                if still_allowed is not None:
                    await still_allowed()
                if not await journal.begin_add(fqdn, value, identity.label, self.max_records):
                    raise TooManyRecords(
                        f"{identity.label} already has {self.max_records} values published, "
                        "as many as MAX_RECORDS_PER_USER allows; tear down the ones no "
                        "longer needed first"
                    )
                await self.call_provider("add", fqdn, value)
                await journal.commit_add(fqdn, value)
            if self.check_propagation:
                await self._wait_served(fqdn, value)
            elif self.propagation.delay:
                await asyncio.sleep(self.propagation.delay)
        return Change(fqdn, (value,))

    async def remove(self, identity: Identity, fqdn: str, value: str) -> Change:
        async with (
            self._audited(identity, "remove", fqdn, [value]),
            self.locks.hold(fqdn) as journal,
        ):
            await self.remove_locked(journal, fqdn, value)
        return Change(fqdn, (value,))

    async def remove_own(self, identity: Identity, fqdn: str) -> Change:
        """Remove every value *identity* set at *fqdn* (mod_md version 1 teardown)."""
        removed: list[str] = []
        async with (
            self._audited(identity, "remove-own", fqdn, removed),
            self.locks.hold(fqdn) as journal,
        ):
            for record in await journal.values(fqdn, identity.label):
                await self.remove_locked(journal, fqdn, record.value)
                removed.append(record.value)
        return Change(fqdn, tuple(removed))

    @asynccontextmanager
    async def _audited(
        self, identity: Identity, action: str, fqdn: str, values: list[str]
    ) -> AsyncIterator[None]:
        """One audit line for the change in the block, whatever its outcome.

        *values* is read when the block ends, so it may be filled inside it.
        """
        started = time.monotonic()
        result = "error"
        try:
            yield
            result = "ok"
        except GatewayError as exc:
            result = f"{exc.status} {exc.logged}"
            raise
        finally:
            tags = ",".join(value_tag(v) for v in values) or "-"
            self._audit(identity, action, fqdn, tags, result, started)

    async def trim(self, identity: Identity, fqdn: str, keep: int) -> list[str]:
        """Remove all but the *keep* newest values *identity* set at *fqdn*.

        For protocols without a delete (acme-dns): the newest values stay for
        the validations in flight; older ones go.
        """
        removed: list[str] = []
        async with self.locks.hold(fqdn) as journal:
            records = sorted(await journal.values(fqdn, identity.label), key=lambda r: r.created)
            for record in records[: max(0, len(records) - keep)]:
                await self.remove_locked(journal, fqdn, record.value)
                removed.append(record.value)
        if removed:
            tags = ",".join(value_tag(v) for v in removed)
            self._audit(identity, "expire", fqdn, tags, "ok", time.monotonic())
        return removed

    async def remove_locked(
        self, journal: Journal, fqdn: str, value: str, *, settle: bool = True
    ) -> None:
        """Withdraw *value* and forget it; the caller holds *fqdn*'s lock, which gave it
        *journal*."""
        await journal.begin_remove(fqdn, value)
        await self.call_provider("remove", fqdn, value, settle=settle)
        if (fqdn, value) in self.late:
            # An earlier call may still write the value: it stays journaled
            # ("removing") until that call ends, and is removed again then.
            return
        await journal.commit_remove(fqdn, value)

    async def call_provider(
        self, action: Literal["add", "remove"], fqdn: str, value: str, *, settle: bool = True
    ) -> None:
        """One provider call under the deadline, its failures turned into 502/504.

        Past the deadline the call is cancelled, but it may still write (see
        :class:`LateCalls`); with *settle*, its value is put right as soon as
        it ends, else the janitor's next round does it.
        """
        method = self.provider.add_txt if action == "add" else self.provider.remove_txt
        started = time.monotonic()
        result = "error"
        task = asyncio.create_task(method(fqdn, value), name=f"provider {action} {fqdn}")
        try:
            done, _ = await asyncio.wait({task}, timeout=self.provider_timeout)
            if not done:
                result = "timeout"
                raise UpstreamTimeout(
                    f"{self.provider.label}: no answer within {self.provider_timeout:g}s"
                )
            task.result()
            result = "ok"
        except ProviderTimeout as exc:
            result = "timeout"
            raise UpstreamTimeout(_one_line(str(exc))) from None
        except ProviderError as exc:
            raise UpstreamFailed(_one_line(str(exc))) from None
        except GatewayError:
            raise
        except Exception as exc:
            log.exception("provider %s failed unexpectedly", self.provider.label)
            raise UpstreamFailed(
                f"{self.provider.label}: unexpected {type(exc).__name__}"
            ) from None
        finally:
            if not task.done():  # past the deadline, or the request itself was cancelled
                task.cancel()
                on_end = self._settle_later if settle and not self._closing else None
                self.late.track(fqdn, value, task, action == "remove", on_end)
            if self.metrics is not None:
                self.metrics.provider_seconds.labels(method.__name__, result).observe(
                    time.monotonic() - started
                )

    def _settle_later(self, fqdn: str, value: str, removal: bool) -> None:
        if self._closing:
            return
        task = asyncio.create_task(self._settle(fqdn, value, removal), name=f"settle {fqdn}")
        self._settling.add(task)
        task.add_done_callback(self._settling.discard)

    async def _settle(self, fqdn: str, value: str, removal: bool) -> None:
        """The last late call for *value* ended: make DNS agree with the journal."""
        try:
            async with self.locks.hold(fqdn) as journal:
                if (fqdn, value) in self.late:
                    return  # a newer late call settles it when it ends
                record = await journal.record(fqdn, value)
                if record is not None and record.state == "present":
                    if removal:  # a late removal may have taken a value wanted again
                        await self.call_provider("add", fqdn, value, settle=False)
                    return
                # Its setup was never confirmed (it timed out), or its teardown came.
                await self.remove_locked(journal, fqdn, value, settle=False)
        except GatewayError as exc:
            log.warning(
                "could not put %s (value %s) right after a late provider call: %s; "
                "the janitor tries again",
                fqdn,
                value_tag(value),
                exc.logged,
            )
            return
        log.info("removed %s (value %s) after a late provider call ended", fqdn, value_tag(value))

    async def aclose(self) -> None:
        """Stop waiting for late calls (their values stay journaled) and settling them."""
        self._closing = True
        self.late.stop_waiting()
        await stop_tasks(list(self._settling), "settling values after late provider calls")

    async def _wait_served(self, fqdn: str, value: str) -> None:
        started = time.monotonic()
        result = "error"
        try:
            await wait_for_txt(fqdn, value, self.propagation.wait)
            result = "ok"
        except PropagationTimeout as exc:
            result = "timeout"
            # The record stays journaled: the client's teardown or the janitor removes it.
            lagging = ", ".join(exc.lagging) or "the authoritative servers"
            raise UpstreamTimeout(
                f"{fqdn}: not served by {lagging} within {self.propagation.timeout:g}s"
            ) from None
        except PropagationError as exc:
            # Written, but we cannot tell whether the world sees it: never claim success.
            hint = f" — {exc.hint()}" if isinstance(exc, NoZoneError) else ""
            raise UpstreamFailed(
                f"{fqdn}: propagation check failed: {_one_line(str(exc))}{hint}"
            ) from None
        finally:
            if self.metrics is not None:
                self.metrics.propagation_seconds.labels(result).observe(time.monotonic() - started)

    def _audit(
        self, identity: Identity, action: str, fqdn: str, tag: str, result: str, started: float
    ) -> None:
        audit.info(
            "user=%s client=%s action=%s fqdn=%s value=%s result=%s ms=%d",
            identity.label,
            identity.client,
            action,
            fqdn,
            tag,
            result,
            (time.monotonic() - started) * 1000,
            extra={
                "audit": {
                    "user": identity.label,
                    "client": str(identity.client),
                    "action": action,
                    "fqdn": fqdn,
                    "value": tag,
                    "result": result,
                    "ms": round((time.monotonic() - started) * 1000),
                }
            },
        )


def _requested_name(name: object, field: str) -> str:
    """*name* from a request body, normalised; :class:`BadRequest` naming *field* if unusable."""
    if not isinstance(name, str):
        raise BadRequest(field, "must be a string")
    try:
        return normalize_name(name)
    except InvalidName as exc:
        raise BadRequest(field, f"invalid name: {exc}") from None


def _one_line(text: str) -> str:
    return text.splitlines()[0][:300] if text else "failed"
