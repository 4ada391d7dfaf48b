"""Who is calling: client address, host allowlist, basic auth and failure limits.

Every route declares an :class:`Access` (``gateway.routes``), and one
middleware applies it through :meth:`Authenticator.admit` before any handler
runs: no handler checks callers itself. Rules (README "Security model"):

* The client address is the TCP peer, unless the peer is one of
  ``ALLOWED_PROXIES``: then it is the right-most address in the ``PROXY_XFF``
  header that is not itself a trusted proxy. Other peers' headers are ignored.
* ``BASIC_AUTH=off``: the client address must be in ``ALLOWED_HOSTS``.
  ``sufficient``: a valid password, or an allowed host when hosts are set (with
  no hosts a password is always required). ``required``: a valid password and,
  when hosts are set, an allowed host. Credentials that are sent are always
  checked: a wrong password is refused even from an allowed host, so a
  per-user domain restriction can never be bypassed by sending bad ones.
* acme-dns ``/update`` passes the same host rule; its credential is the
  account's ``X-Api-User``/``X-Api-Key`` (in every mode, since the key says
  which name may be written), which plays the password's part: ``sufficient``
  admits a valid key from any address, ``required`` a valid key from an
  allowed host, ``off`` a valid key from an allowed host. An account's
  ``allowfrom`` then narrows that further; it never admits a host the rule
  refused.
* Failed password checks are counted per client address; past the limit that
  address gets 429 with ``Retry-After`` until its window ends. The check is
  made before any hashing, so a flood costs us almost nothing, and other
  addresses are unaffected.
* Password hashing runs in a small thread pool, never on the event loop.
  Successful checks are cached in memory under an HMAC of the credentials with
  a per-process key, for ``AUTH_CACHE_TTL`` seconds; the cache empties when the
  password file changes. Unknown users are checked against a dummy hash, so
  they cost the same as known ones.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import hashlib
import hmac
import ipaddress
import logging
import os
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import NoReturn

from aiohttp import web

from gateway.acmedns import Account, AccountStore
from gateway.config import AuthConfig, AuthMode, IPNetwork
from gateway.errors import (
    BadRequest,
    Busy,
    Forbidden,
    TooManyRequests,
    Unauthorized,
    Unavailable,
)
from lib.passwd import PasswdFileError, PasswordFile, UserEntry

log = logging.getLogger(__name__)

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

_MAX_HEADER = 4096
_MAX_API_FIELD = 256  # X-Api-User / X-Api-Key



class Access(Enum):
    """Who may call an endpoint; every route declares one."""

    PUBLIC = "public"  # anyone: liveness and the API's description, nothing else
    CALLER = "caller"  # the host rule and basic auth (BASIC_AUTH, ALLOWED_HOSTS)
    ADMIN = "admin"  # CALLER, then an admin user or a caller admitted by its address
    ACCOUNT = "account"  # the host rule and an acme-dns account's key, within its allowfrom


@dataclass(frozen=True)
class Identity:
    """An authenticated caller."""

    client: IPAddress
    user: str | None  # None: admitted by host allowlist alone
    domains: tuple[str, ...] | None  # None: every managed domain
    admin: bool = False
    account: Account | None = None  # the acme-dns account, for Access.ACCOUNT

    @property
    def label(self) -> str:
        if self.account is not None:
            return self.account.label
        if self.user is not None:
            return self.user
        return f"host:{client_key(self.client)}"


# Where the access middleware (gateway.routes) leaves the admitted caller on a request.
CALLER = web.RequestKey("caller", Identity)


def caller(request: web.Request) -> Identity:
    """The caller the access middleware admitted (endpoints that are not public)."""
    try:
        return request[CALLER]
    except KeyError:
        raise RuntimeError(f"{request.method} {request.path}: no caller; is it public?") from None


def client_key(addr: IPAddress | str) -> str:
    """Whom a caller counts as, for the failure limiter, the refusal log, connection
    limits and host labels: its address (IPv4 for an IPv4-mapped one), or its /64 for
    IPv6, since one host picks addresses in its /64 at will. A *addr* that is no
    address (a unix socket peer) counts as itself."""
    if isinstance(addr, str):
        text = addr
        try:
            addr = ipaddress.ip_address(text.partition("%")[0])
        except ValueError:
            return text
    if isinstance(addr, ipaddress.IPv6Address):
        if addr.ipv4_mapped is not None:
            return str(addr.ipv4_mapped)
        return str(ipaddress.IPv6Network((addr, 64), strict=False))
    return str(addr)


def in_networks(nets: tuple[IPNetwork, ...], addr: IPAddress) -> bool:
    """Whether *addr* is in one of *nets*, an IPv4-mapped address as its IPv4 one too."""
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        mapped: IPAddress = addr.ipv4_mapped
        return any(mapped in n for n in nets) or any(addr in n for n in nets)
    return any(addr in n for n in nets)


def _parse_forwarded(value: str) -> IPAddress | None:
    text = value.strip().strip('"')
    if text.startswith("["):
        text = text[1:].partition("]")[0]
    elif text.count(":") == 1:  # IPv4 with a port
        text = text.partition(":")[0]
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        return None


def client_address(request: web.Request, config: AuthConfig) -> IPAddress:
    """The caller's address, trusting the forwarding header only from trusted proxies."""
    peer = request.transport.get_extra_info("peername") if request.transport else None
    try:
        addr: IPAddress = ipaddress.ip_address(peer[0]) if peer else ipaddress.ip_address("0.0.0.0")  # noqa: S104
    except ValueError:
        addr = ipaddress.ip_address("0.0.0.0")  # noqa: S104 - a unix socket peer matches no allowlist
    if not config.proxy_header or not in_networks(config.allowed_proxies, addr):
        return addr
    # Several header lines are one list, in order; walk it from the right (the
    # entry our trusted proxy appended) past every trusted proxy.
    entries = [
        e for line in request.headers.getall(config.proxy_header, []) for e in line.split(",")
    ]
    for entry in reversed(entries):
        hop = _parse_forwarded(entry)
        if hop is None:
            # Whatever stands left of a garbled entry was not written by a proxy we trust.
            raise BadRequest(config.proxy_header, "malformed address in forwarding header")
        addr = hop
        if not in_networks(config.allowed_proxies, hop):
            break
    return addr


def _is_utf8(text: str) -> bool:
    """Whether *text* came from valid UTF-8 (aiohttp decodes other header bytes with
    surrogate escapes)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def parse_basic(request: web.Request) -> tuple[str, str] | None:
    """``(user, password)`` from an ``Authorization: Basic`` header, or None if absent."""
    header = request.headers.get("Authorization")
    if header is None:
        return None
    scheme, _, token = header.strip().partition(" ")
    if scheme.lower() != "basic":
        raise Unauthorized("only Basic authentication is supported")
    if len(token) > _MAX_HEADER:
        raise Unauthorized("malformed credentials")
    try:
        raw = base64.b64decode(token.strip(), validate=True)
    except (binascii.Error, ValueError):
        raise Unauthorized("malformed credentials") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        # RFC 7617: without a charset parameter clients may send ISO-8859-1.
        text = raw.decode("latin-1")
    user, sep, password = text.partition(":")  # the password may contain ':'
    if not sep or not user:
        raise Unauthorized("malformed credentials")
    return user, password


class FailureLimiter:
    """Counts failed attempts per client address in fixed windows."""

    def __init__(
        self,
        limit: int,
        window: float,
        clock: Callable[[], float] = time.monotonic,
        max_entries: int = 100_000,
    ) -> None:
        self.limit = limit
        self.window = window
        self._clock = clock
        self._max = max_entries
        self._entries: dict[str, tuple[float, int]] = {}

    def retry_after(self, addr: IPAddress, pending: int = 0) -> int:
        """Seconds until *addr* may try again, 0 if it may now.

        *pending* checks of its that are under way count as failures that may
        come, so that a burst of concurrent guesses gets no more checks than the
        limit allows; their end is worth waiting a second for.
        """
        key = client_key(addr)
        count, remaining = 0, 0.0
        entry = self._entries.get(key)
        if entry is not None:
            start, count = entry
            remaining = start + self.window - self._clock()
            if remaining <= 0:
                del self._entries[key]
                count = 0
        if count >= self.limit:
            return int(remaining) + 1
        return 1 if count + pending >= self.limit else 0

    def failed(self, addr: IPAddress) -> None:
        now = self._clock()
        key = client_key(addr)
        start, count = self._entries.get(key, (now, 0))
        if now - start >= self.window:
            start, count = now, 0
        self._entries[key] = (start, count + 1)
        if len(self._entries) > self._max:
            self._prune(now)

    def _prune(self, now: float) -> None:
        for key, (start, _) in list(self._entries.items()):
            if now - start >= self.window:
                del self._entries[key]
        while len(self._entries) > self._max:  # still full: forget the oldest
            del self._entries[next(iter(self._entries))]


class PasswordStore:
    """The password file, reloaded when it changes, with a verification cache.

    Checks run in a small thread pool behind a bounded queue: at most
    ``queue_size`` checks wait for a thread (a quarter of them for one user
    name), none longer than ``queue_wait`` seconds; past either, the check is
    shed with 503 and ``Retry-After`` (:class:`Busy`) rather than queued without
    end. Concurrent checks of the same credentials share one hash.

    Every reading of the file is a generation. A check computed against an
    older generation than the one in force when it ends is not cached, and is
    only believed if the user still has the same hash: a user deleted (or given
    a new password) while a check of theirs waited or ran is refused at once,
    not after ``AUTH_CACHE_TTL``.
    """

    def __init__(
        self,
        path: Path,
        cache_ttl: float,
        workers: int = 2,
        clock: Callable[[], float] = time.monotonic,
        queue_size: int = 64,
        queue_wait: float = 5.0,
    ) -> None:
        self.file = PasswordFile(path)
        self.cache_ttl = cache_ttl
        self.queue_size = queue_size
        self.queue_wait = queue_wait
        self.generation = 0
        self._clock = clock
        self._users: dict[str, UserEntry] = {}
        self._stamp: tuple[int, int, int] | None = None
        self._stamp_error: str | None = None
        self._cache: dict[bytes, tuple[float, UserEntry]] = {}
        self._cache_key = os.urandom(32)
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="passwd")
        self._threads = asyncio.Semaphore(workers)
        self._waiting = 0
        self._waiting_for: dict[str, int] = {}
        self._checks: dict[bytes, asyncio.Future[UserEntry | None]] = {}

    @classmethod
    def from_config(cls, config: AuthConfig) -> PasswordStore:
        assert config.passwd_file is not None
        return cls(
            config.passwd_file,
            config.cache_ttl,
            queue_size=config.queue_size,
            queue_wait=config.queue_wait,
        )

    def load(self) -> None:
        """Read the file now; raises PasswdFileError."""
        self._adopt(self.file.stamp(), self.file.load())

    def _adopt(self, stamp: tuple[int, int, int] | None, users: dict[str, UserEntry]) -> None:
        self._users, self._stamp = users, stamp
        self._cache.clear()
        self.generation += 1

    def _refresh(self) -> None:
        """Pick up a changed file. One ``stat`` per check: a user deleted from the file is
        refused from the next request on (cheap beside a request's TLS and JSON)."""
        try:
            stamp = self.file.stamp()
        except PasswdFileError as exc:
            if str(exc) != self._stamp_error:  # once, not on every request
                log.error("password file not reloaded: %s", exc)
            self._stamp_error = str(exc)
            return
        self._stamp_error = None
        if stamp == self._stamp:
            return
        try:
            users = self.file.load()
        except PasswdFileError as exc:
            # Keep serving with the users we know rather than locking everyone out.
            log.error("password file not reloaded: %s", exc)
            self._stamp = stamp
            return
        self._adopt(stamp, users)
        log.info("password file reloaded: %d users", len(users))

    def digest(self, user: str, password: str) -> bytes:
        """What identifies these credentials in memory (an HMAC with a per-process key)."""
        msg = (
            user.encode("utf-8", "surrogatepass")
            + b"\0"
            + password.encode("utf-8", "surrogatepass")
        )
        return hmac.new(self._cache_key, msg, hashlib.sha256).digest()

    def cached(self, user: str, password: str) -> UserEntry | None:
        """A recent successful check of exactly these credentials, if any."""
        self._refresh()
        digest = self.digest(user, password)
        hit = self._cache.get(digest)
        if hit is None:
            return None
        expires, entry = hit
        if expires < self._clock():
            del self._cache[digest]
            return None
        return entry

    async def verify(self, user: str, password: str) -> UserEntry | None:
        """Check the password with the slow hash (callers look in :meth:`cached` first).

        Raises :class:`Busy` when the queue is full or the wait too long.
        """
        digest = self.digest(user, password)
        check = self._checks.get(digest)
        if check is None:
            # A task of its own: a caller that goes away does not cancel the check
            # that others with the same credentials wait for.
            check = asyncio.ensure_future(self._check(users=self._users, user=user,
                                                      password=password, digest=digest))
            self._checks[digest] = check
            check.add_done_callback(lambda _: self._checks.pop(digest, None))
        return await asyncio.shield(check)

    async def _check(
        self, users: dict[str, UserEntry], user: str, password: str, digest: bytes
    ) -> UserEntry | None:
        generation = self.generation
        entry = await self._hash(users, user, password)
        self._refresh()  # a file changed while we hashed must count now
        if generation != self.generation:
            # Computed against a file that is no longer in force: it proves the password
            # only if the user still has the hash we checked it against.
            current = self._users.get(user)
            if entry is None or current is None or current.hash != entry.hash:
                return None
            entry = current
        if entry is not None and self.cache_ttl > 0:
            if len(self._cache) > 10_000:
                self._cache.clear()
            self._cache[digest] = (self._clock() + self.cache_ttl, entry)
        return entry

    async def _hash(
        self, users: dict[str, UserEntry], user: str, password: str
    ) -> UserEntry | None:
        """Run one check in a hashing thread, after a bounded wait for one."""
        if self._waiting >= self.queue_size:
            raise Busy("too many password checks waiting")
        # Guesses at one account from many addresses may take a quarter of the queue,
        # so that other users (an admin among them) still find room in it.
        if self._waiting_for.get(user, 0) >= max(1, self.queue_size // 4):
            raise Busy("too many password checks waiting for this user name")
        self._waiting += 1
        self._waiting_for[user] = self._waiting_for.get(user, 0) + 1
        try:
            await asyncio.wait_for(self._threads.acquire(), self.queue_wait)
        except TimeoutError:
            raise Busy(f"no password check could start within {self.queue_wait:g}s") from None
        finally:
            self._waiting -= 1
            self._waiting_for[user] -= 1
            if not self._waiting_for[user]:
                del self._waiting_for[user]
        loop = asyncio.get_running_loop()
        try:
            job = self._pool.submit(self.file.verify, users, user, password)
        except RuntimeError as exc:  # the pool is shut down: we are stopping
            self._threads.release()
            raise Unavailable("shutting down") from exc

        def done(_: object) -> None:
            # The thread is free only when the hash ends, whoever still waits for it.
            with contextlib.suppress(RuntimeError):  # the loop is closed: we are gone
                loop.call_soon_threadsafe(self._threads.release)

        job.add_done_callback(done)
        return await asyncio.wrap_future(job)

    @property
    def waiting(self) -> int:
        """Checks waiting for a hashing thread now."""
        return self._waiting

    def close(self, *, cancel: bool = True) -> None:
        """Stop the hashing threads; ``cancel=False`` lets queued checks finish (reload)."""
        self._pool.shutdown(wait=False, cancel_futures=cancel)


class Authenticator:
    """Applies the configured rules to a request and returns the :class:`Identity`."""

    def __init__(
        self,
        config: AuthConfig,
        passwords: PasswordStore | None,
        limiter: FailureLimiter | None = None,
        accounts: AccountStore | None = None,
    ) -> None:
        self.config = config
        self.passwords = passwords
        self.accounts = accounts
        self.limiter = limiter or FailureLimiter(config.max_failures, config.failure_window)
        self.on_failure: Callable[[str], None] = lambda reason: None
        # Password checks under way per client (client_key), by credentials.
        self._pending: dict[str, dict[bytes, int]] = {}

    def host_allowed(self, addr: IPAddress) -> bool:
        return in_networks(self.config.allowed_hosts, addr)

    async def admit(self, request: web.Request, access: Access) -> Identity | None:
        """The caller of *request* if *access* lets it in (None for a public endpoint);
        otherwise 401, 403 or 429."""
        if access is Access.PUBLIC:
            return None
        addr, host_ok = self.check_address(request)
        if access is Access.ACCOUNT:
            return await self._account(request, addr)
        identity = await self._basic(request, addr, host_ok)
        if access is Access.ADMIN and not (identity.admin or identity.user is None):
            raise Forbidden("this needs an admin user or an allowed host")
        return identity

    def check_address(self, request: web.Request) -> tuple[IPAddress, bool]:
        """The caller's address and whether it is an allowed host; 403 now when the rules
        refuse that address whatever it sends."""
        addr = client_address(request, self.config)
        host_ok = self.host_allowed(addr)
        self._host_rule(addr, host_ok)
        return addr, host_ok

    def _host_rule(self, addr: IPAddress, host_ok: bool) -> None:
        """The part of the rules that depends on the address alone, the same for every API."""
        cfg = self.config
        if not host_ok and (
            cfg.mode is AuthMode.OFF or (cfg.mode is AuthMode.REQUIRED and cfg.allowed_hosts)
        ):
            self._refuse(addr, "host not allowed")
            raise Forbidden(f"client address {addr} is not allowed")

    async def _basic(self, request: web.Request, addr: IPAddress, host_ok: bool) -> Identity:
        cfg = self.config
        if cfg.mode is AuthMode.OFF:
            return Identity(addr, None, None)
        creds = parse_basic(request)
        if creds is None:
            if cfg.mode is AuthMode.SUFFICIENT and host_ok:
                return Identity(addr, None, None)
            raise Unauthorized()
        user, password = creds
        entry = await self._check(addr, user, password)
        return Identity(addr, entry.name, entry.domains or None, entry.is_admin)

    async def _account(self, request: web.Request, addr: IPAddress) -> Identity:
        user = request.headers.get("X-Api-User", "")
        key = request.headers.get("X-Api-Key", "")
        if not user or not key or len(user) > _MAX_API_FIELD or len(key) > _MAX_API_FIELD:
            raise Unauthorized("X-Api-User and X-Api-Key are required")
        if self.accounts is None:
            raise Unauthorized("no acme-dns accounts")
        self.check_limit(addr)
        if not (_is_utf8(user) and _is_utf8(key)):
            # Header bytes that are not UTF-8 (decoded with surrogates): no account has
            # them, and neither the state's database nor the key hash can take them.
            self.wrong_secret(addr, "invalid X-Api-User or X-Api-Key")
        account = await self.accounts.verify(user, key)
        if account is None:
            self.wrong_secret(addr, "invalid X-Api-User or X-Api-Key")
        if account.allowfrom and not in_networks(account.allowfrom, addr):
            self._refuse(addr, "host not in allowfrom")
            raise Forbidden(f"client address {addr} is not in this account's allowfrom")
        return Identity(addr, account.label, None, account=account)

    async def _check(self, addr: IPAddress, user: str, password: str) -> UserEntry:
        if self.passwords is None:
            raise Unauthorized("no password file")
        # A cached success proves the caller knows the password already; let it
        # through even while its address is locked out by someone else's flood.
        store = self.passwords
        entry = store.cached(user, password)
        if entry is not None:
            return entry
        client, digest = client_key(addr), store.digest(user, password)
        checks = self._pending.setdefault(client, {})
        if digest not in checks:  # the same credentials again share the check under way
            self.check_limit(addr, pending=len(checks))
        checks[digest] = checks.get(digest, 0) + 1
        try:
            entry = await store.verify(user, password)
        except Busy:
            self.on_failure("busy")
            raise
        finally:
            checks[digest] -= 1
            if not checks[digest]:
                del checks[digest]
            if not checks:
                self._pending.pop(client, None)
        if entry is None:
            self.wrong_secret(addr, "invalid user name or password")
        return entry

    def check_limit(self, addr: IPAddress, pending: int = 0) -> None:
        """429 while *addr* is over its failed-attempt limit, counting *pending* checks
        of its under way; call before any secret check."""
        wait = self.limiter.retry_after(addr, pending)
        if wait:
            self.on_failure("rate_limited")
            raise TooManyRequests(wait)

    def wrong_secret(self, addr: IPAddress, message: str) -> NoReturn:
        """Count a failed secret check against *addr* and answer 401."""
        self.limiter.failed(addr)
        self._refuse(addr, "bad credentials")
        raise Unauthorized(message)

    def _refuse(self, addr: IPAddress, reason: str) -> None:
        # The refusal's audit line (gateway.refusals) says who and why, rate-limited.
        self.on_failure(reason)
