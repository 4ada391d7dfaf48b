"""One HTTP/1.1 exchange with the gateway, on ``socket`` and ``ssl`` alone.

acmegw-hook is a new process for every call, and mod_md makes four calls per
certificate (two setups, two teardowns) while the order waits on them, so what the
hook loads is most of what it costs (``bench/modmd_chain.py``). On a 2-core machine
importing ``requests`` took 70 ms of a 120 ms call; ``http.client`` still costs 9 ms
over ``ssl`` (it brings the ``email`` package for its header parser). What the hook
needs of HTTP is small, and all of it is here: one request per connection
(``Connection: close``), an answer with ``Content-Length``, chunked, or ending with
the connection, no redirects, TLS verified against one CA file or the system's
trust store, and a forward proxy from the environment (CONNECT for https).

The exchange as a whole is bounded by one deadline: resolving the name, connecting, the
proxy's CONNECT, the TLS handshake, sending and every read take what is left of it, so a
server that drips its answer a byte at a time cannot stretch a run (a socket timeout
alone bounds only each read).

Failures are sorted by what the caller should do about them: :class:`Unreachable`
and :class:`NoAnswer` may pass (the gateway restarting, a network blip) and are worth
another try; :class:`TLSFailure` and :class:`NotHTTP` will not change by trying again.
"""

from __future__ import annotations

import _thread
import base64
import json
import os
import re
import socket
import ssl
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, NamedTuple
from urllib.parse import SplitResult, unquote, urlsplit

from lib.names import is_loopback_host

if TYPE_CHECKING:
    from ipaddress import IPv4Network, IPv6Network

# The gateway's answers are a few hundred bytes; more than this is not a gateway.
MAX_REPLY = 1 << 16
# Interim (1xx) answers before the real one: a gateway sends none (the hook never asks for
# 100 Continue); a few are tolerated, an endless stream of them is not an HTTP server.
MAX_INTERIM = 5
PROXY_KEYS = ("https_proxy", "http_proxy", "all_proxy", "no_proxy")


class TransportError(Exception):
    """The exchange did not produce an HTTP answer; the message says why."""

    retry = False


class Unreachable(TransportError):
    """No connection, or it broke before the answer was complete."""

    retry = True


class NoAnswer(TransportError):
    """Connected, but no answer came in time."""

    retry = True


class TLSFailure(TransportError):
    """The gateway's certificate was not accepted, or TLS could not be agreed."""


class NotHTTP(TransportError):
    """Something answered, but not in HTTP."""


class Reply(NamedTuple):
    status: int
    reason: str
    body: bytes
    # The ``Retry-After`` field as sent (RFC 9110 10.2.3), if any: the caller reads it.
    retry_after: str | None = None

    def json_object(self) -> dict[str, Any] | None:
        """The body as a JSON object, or None when it is not one."""
        try:
            value = json.loads(self.body)
        except ValueError:  # UnicodeDecodeError included
            return None
        return value if isinstance(value, dict) else None

    @property
    def text(self) -> str:
        return self.body.decode("utf-8", errors="replace")


class Proxy(NamedTuple):
    """A forward proxy (``http://[user:password@]host:port``) the request goes through."""

    host: str
    port: int
    authorization: str | None = None

    def __repr__(self) -> str:  # never the proxy's credentials
        return f"Proxy({self.host}:{self.port})"


def basic_authorization(user: str, password: str) -> str:
    """A basic ``Authorization`` value in UTF-8 (RFC 7617), which the gateway reads."""
    token = base64.b64encode(f"{user}:{password}".encode()).decode("ascii")
    return f"Basic {token}"


def proxy_for(url: SplitResult, environ: Mapping[str, str]) -> Proxy | None:
    """The proxy *environ* names for *url*, as curl and requests read it; None for direct.

    ``https_proxy``/``http_proxy`` (per the URL's scheme), else ``all_proxy``; a
    lower-case name wins over its upper-case one; ``no_proxy`` lists hosts (and domain
    suffixes, ``*`` for all) reached directly. Like Python's ``urllib``, the upper-case
    ``HTTP_PROXY`` is ignored when ``REQUEST_METHOD`` is set (a CGI environment, where
    a client's ``Proxy:`` header would arrive as ``HTTP_PROXY``). :class:`ValueError`
    for a proxy that is not ``http://``.

    A loopback gateway is always reached directly, whatever the environment says: a
    proxy cannot reach this machine's loopback anyway, and plain http with a password
    is allowed only there, so a proxy in between would be handed the password.
    """
    if is_loopback_host(url.hostname or ""):
        return None
    found: dict[str, str] = {}
    for key, value in environ.items():
        lower = key.lower()
        if lower not in PROXY_KEYS or not value.strip():
            continue
        if key == "HTTP_PROXY" and "REQUEST_METHOD" in environ:
            continue
        if lower in found and key != lower:
            continue  # the lower-case spelling was seen first and wins
        found[lower] = value.strip()
    chosen = found.get(f"{url.scheme}_proxy") or found.get("all_proxy")
    if chosen is None:
        return None
    if "no_proxy" in found and bypasses_proxy(url.hostname or "", _port(url), found["no_proxy"]):
        return None
    return parse_proxy(chosen)


def bypasses_proxy(host: str, port: int, no_proxy: str) -> bool:
    """Whether *no_proxy* (comma-separated) names *host*: ``*``; a name, which also covers
    the names under it (a leading dot changes nothing); an address or a network
    (``10.0.0.0/8``, ``fd00::/8``); each optionally with ``:port`` (``[v6]:port``)."""
    name = host.lower().rstrip(".")
    for raw in no_proxy.split(","):
        entry = raw.strip().lower()
        if entry == "*":
            return True
        only_port = None
        if entry.startswith("["):
            entry, _, rest = entry[1:].partition("]")
            only_port = rest.removeprefix(":") or None
        elif entry.count(":") == 1:
            entry, only_port = entry.split(":")
        if not entry or (only_port is not None and only_port != str(port)):
            continue
        network = _network(entry)
        if network is not None:
            if _address_in(name, network):
                return True
            continue
        entry = entry.strip(".")
        if name == entry or name.endswith("." + entry):
            return True
    return False


def _network(entry: str) -> IPv4Network | IPv6Network | None:
    if not (entry[:1].isdigit() or ":" in entry):
        return None  # a name: no need to load ipaddress
    import ipaddress

    try:
        return ipaddress.ip_network(entry, strict=False)
    except ValueError:
        return None


def _address_in(host: str, network: IPv4Network | IPv6Network) -> bool:
    import ipaddress

    try:
        return ipaddress.ip_address(host) in network
    except ValueError:
        return False


def parse_proxy(text: str) -> Proxy:
    parts = urlsplit(text if "://" in text else f"http://{text}")
    if parts.scheme != "http":
        raise ValueError(f"{parts.scheme}:// proxies are not supported; give an http:// proxy "
                         "(the connection to the gateway is tunnelled through it with CONNECT)")
    try:
        port = parts.port or 80
    except ValueError:
        raise ValueError("the proxy's port is not a number from 1 to 65535") from None
    if not parts.hostname:
        raise ValueError("the proxy URL has no host")
    authorization = None
    if parts.username is not None:
        authorization = basic_authorization(unquote(parts.username),
                                            unquote(parts.password or ""))
    return Proxy(parts.hostname, port, authorization)


def tls_context(ca_file: str | None) -> ssl.SSLContext:
    """Verify the gateway against *ca_file* alone (a PEM file, or a directory of them
    named by hash as ``c_rehash`` makes it), or else the system's trust store."""
    # Given a cafile or capath, create_default_context() loads that and nothing else.
    if ca_file is not None and os.path.isdir(ca_file):
        return ssl.create_default_context(capath=ca_file)
    return ssl.create_default_context(cafile=ca_file)


def exchange(method: str, url: SplitResult, body: bytes, headers: Mapping[str, str], *,
             context: ssl.SSLContext | None, proxy: Proxy | None, deadline: float,
             connect_timeout: float) -> Reply:
    """Send one request on a connection of its own and read the answer; never follows
    a redirect. Raises a :class:`TransportError` subclass when no HTTP answer came.

    Everything ends by *deadline* (on :func:`time.monotonic`), an attempt to connect to
    one of the host's addresses after *connect_timeout* at most.
    """
    host = url.hostname or ""
    port = _port(url)
    authority = url.netloc  # host[:port] as written; ACMEGW_URL holds no credentials
    target = (url.path or "/") + (f"?{url.query}" if url.query else "")
    fields = {"Host": authority, "Content-Type": "application/json",
              "Accept": "application/json", "Content-Length": str(len(body)),
              "Connection": "close", **headers}
    if proxy is not None and url.scheme == "http":
        target = url._replace(fragment="").geturl()  # absolute form, for the proxy
        if proxy.authorization:
            fields["Proxy-Authorization"] = proxy.authorization
    sock: socket.socket | None = None
    try:
        try:
            sock = (_connect(proxy.host, proxy.port, deadline, connect_timeout)
                    if proxy is not None else _connect(host, port, deadline, connect_timeout))
            if url.scheme == "https":
                assert context is not None
                if proxy is not None:
                    _tunnel(sock, f"{_bracketed(host)}:{port}", proxy, deadline)
                # The handshake, certificate check included, is part of connecting; CPython
                # bounds the whole handshake by the socket's timeout, not each read of it.
                sock.settimeout(_left(deadline))
                sock = context.wrap_socket(sock, server_hostname=_name(host))
        except _SlowResolver as exc:
            raise NoAnswer(str(exc)) from None
        except TimeoutError:
            raise NoAnswer("connecting timed out") from None
        # The gateway answers a setup only once every nameserver serves the value:
        # the answer may take as long as the run has left.
        head = "".join(f"{name}: {value}\r\n" for name, value in fields.items())
        sock.settimeout(_left(deadline))  # for all of sendall, not each send
        sock.sendall(f"{method} {target} HTTP/1.1\r\n{head}\r\n".encode() + body)
        return _read_reply(_Reader(sock, deadline))
    except ssl.SSLCertVerificationError as exc:
        raise TLSFailure(f"certificate verify failed: {exc.verify_message}") from None
    except (ssl.SSLEOFError, ssl.SSLZeroReturnError):
        raise Unreachable("connection closed during TLS") from None
    except ssl.SSLError as exc:
        raise TLSFailure(_ssl_reason(exc)) from None
    except TimeoutError:
        raise NoAnswer("no answer in time") from None
    except socket.gaierror as exc:
        raise Unreachable(_lower(exc.strerror or str(exc))) from None
    except UnicodeError as exc:  # a host name IDNA cannot encode
        raise Unreachable(f"bad host name: {exc}") from None
    except OSError as exc:
        raise Unreachable(_lower(exc.strerror or str(exc) or type(exc).__name__)) from None
    finally:
        if sock is not None:
            sock.close()


class _Reader:
    """Buffered reads from a socket, bounded in size (nothing a gateway says is large)
    and in time (each read gets what is left until the deadline)."""

    def __init__(self, sock: socket.socket, deadline: float) -> None:
        self.sock = sock
        self.deadline = deadline
        self.buffer = b""
        self.closed = False

    def fill(self) -> bool:
        """Read more; False once the peer closed."""
        if self.closed:
            return False
        self.sock.settimeout(_left(self.deadline))
        data = self.sock.recv(65536)
        if not data:
            self.closed = True
            return False
        self.buffer += data
        if len(self.buffer) > 2 * MAX_REPLY:
            raise NotHTTP("an answer larger than any a gateway gives")
        return True

    def until(self, mark: bytes, what: str) -> bytes:
        """The bytes before *mark* (consumed with it)."""
        while (end := self.buffer.find(mark)) < 0:
            if not self.fill():
                if not self.buffer:
                    raise Unreachable("connection closed")
                raise Unreachable(f"connection closed in the middle of {what}")
        data, self.buffer = self.buffer[:end], self.buffer[end + len(mark):]
        return data

    def exactly(self, size: int) -> bytes:
        while len(self.buffer) < size:
            if not self.fill():
                raise Unreachable("connection closed before the answer was complete")
        data, self.buffer = self.buffer[:size], self.buffer[size:]
        return data

    def rest(self) -> bytes:
        while self.fill():
            pass
        data, self.buffer = self.buffer, b""
        return data


_STATUS = re.compile(rb"HTTP/1\.[01] ([1-9][0-9][0-9])(?: ([^\r\n]*))?")


def _read_head(reader: _Reader) -> tuple[int, str, dict[str, str]]:
    """Status, reason and header fields (names lower-cased) of the next answer."""
    while len(reader.buffer) < 5 and reader.fill():
        pass
    if reader.buffer and not b"HTTP/".startswith(reader.buffer[:5]):
        raise NotHTTP(f"the answer begins {reader.buffer[:40]!r}")
    head = reader.until(b"\r\n\r\n", "the answer's header")
    lines = head.split(b"\r\n")
    match = _STATUS.fullmatch(lines[0])
    if match is None:
        raise NotHTTP(f"the answer begins {lines[0][:60]!r}")
    fields: dict[str, str] = {}
    for line in lines[1:]:
        name, colon, value = line.partition(b":")
        if not colon or not name or name != name.strip():
            raise NotHTTP(f"a header line {line[:60]!r}")
        fields[name.decode("latin-1").lower()] = value.strip().decode("latin-1")
    return int(match.group(1)), (match.group(2) or b"").decode("latin-1"), fields


def _read_reply(reader: _Reader) -> Reply:
    status, reason, fields = _read_head(reader)
    interim = 0
    while 100 <= status < 200:  # an interim answer: the real one follows
        interim += 1
        if interim > MAX_INTERIM:
            raise NotHTTP(f"more than {MAX_INTERIM} interim (1xx) answers")
        status, reason, fields = _read_head(reader)
    if "chunked" in fields.get("transfer-encoding", "").lower():
        body = b""
        while True:
            size_line = reader.until(b"\r\n", "a chunked answer").split(b";")[0].strip()
            try:
                size = int(size_line, 16)
            except ValueError:
                raise NotHTTP(f"a chunk size {size_line[:20]!r}") from None
            if size == 0:
                break
            if len(body) + size > MAX_REPLY:
                raise NotHTTP("an answer larger than any a gateway gives")
            body += reader.exactly(size)
            reader.exactly(2)  # the CRLF after each chunk
    elif "content-length" in fields:
        try:
            length = int(fields["content-length"])
        except ValueError:
            raise NotHTTP(f"Content-Length {fields['content-length'][:20]!r}") from None
        if length > MAX_REPLY:
            raise NotHTTP(f"an answer of {length} bytes, where a gateway's are a few hundred")
        body = reader.exactly(length)
    else:  # the answer ends when the connection does
        body = reader.rest()[:MAX_REPLY]
    return Reply(status, reason, body, fields.get("retry-after"))


def _tunnel(sock: socket.socket, authority: str, proxy: Proxy, deadline: float) -> None:
    """Ask the proxy for a tunnel to *authority* (RFC 9110 CONNECT)."""
    auth = f"Proxy-Authorization: {proxy.authorization}\r\n" if proxy.authorization else ""
    sock.settimeout(_left(deadline))
    sock.sendall(f"CONNECT {authority} HTTP/1.1\r\nHost: {authority}\r\n{auth}\r\n".encode())
    reader = _Reader(sock, deadline)
    status, reason, _ = _read_head(reader)
    if not 200 <= status < 300:
        raise Unreachable(f"the proxy refused the tunnel: {status} {reason}".strip())
    if reader.buffer:
        raise NotHTTP("the proxy sent data before the tunnel was used")


def _name(host: str) -> bytes:
    """*host* as getaddrinfo and TLS want it. Handed a str, both load the idna codec
    (2 ms of a run), even for an address or a name that is ASCII already."""
    if host.isascii():
        return host.encode("ascii")
    import idna  # IDNA 2008 after UTS #46, as CAs and browsers; loaded only for such a host

    return idna.encode(host, uts46=True)


class _SlowResolver(TimeoutError):
    """The name was not resolved in the time left."""


def _left(deadline: float) -> float:
    """The seconds left until *deadline*; :class:`TimeoutError` when there are none."""
    left = deadline - time.monotonic()
    if left <= 0:
        raise TimeoutError("no answer in time")
    return left


def _addresses(host: str, port: int, deadline: float) -> list[Any]:
    """``getaddrinfo`` for *host*, ended by *deadline*.

    getaddrinfo has no timeout of its own, and a resolver that does not answer keeps it
    for its timeout times its attempts times its servers (30 s and more). A name is
    therefore resolved in a thread of its own, left behind when time is up (the run is
    over then: the process exits). An address needs no thread.
    """
    if host == "localhost":
        # Loopback by definition (RFC 6761 6.3), as curl takes it: the hook sends a password
        # in plaintext to it, which a hosts file without the name, and a resolver answering
        # for "localhost.<search domain>", would send elsewhere.
        return [*_numeric("127.0.0.1", port), *_numeric("::1", port)]
    try:
        return _numeric(host, port)
    except socket.gaierror:
        pass  # a name
    name = _name(host)
    outcome: list[Any] = []
    done = _thread.allocate_lock()
    done.acquire()

    def resolve() -> None:
        try:
            outcome.append(socket.getaddrinfo(name, port, type=socket.SOCK_STREAM))
        except BaseException as exc:  # handed to the caller below
            outcome.append(exc)
        finally:
            done.release()

    _thread.start_new_thread(resolve, ())
    if not done.acquire(timeout=_left(deadline)):
        raise _SlowResolver(f"resolving {host} took longer than the time left")
    if isinstance(outcome[0], BaseException):
        raise outcome[0]
    return outcome[0]  # type: ignore[no-any-return]


def _numeric(address: str, port: int) -> list[Any]:
    """getaddrinfo for an address (:class:`socket.gaierror` for a name), without a lookup."""
    return socket.getaddrinfo(address.encode("ascii", "replace"), port,
                              type=socket.SOCK_STREAM, flags=socket.AI_NUMERICHOST)


def _connect(host: str, port: int, deadline: float, timeout: float) -> socket.socket:
    """What ``socket.create_connection`` does, with the host as bytes (:func:`_name`),
    each address tried for *timeout* at most, all of it ended by *deadline*."""
    problem: OSError = OSError(f"no address for {host}")
    for family, kind, proto, _, address in _addresses(host, port, deadline):
        sock = socket.socket(family, kind, proto)
        try:
            sock.settimeout(min(timeout, _left(deadline)))
            sock.connect(address)
        except OSError as exc:
            sock.close()
            problem = exc
        else:
            return sock
    raise problem


def _port(url: SplitResult) -> int:
    return url.port or (443 if url.scheme == "https" else 80)


def _bracketed(host: str) -> str:
    return f"[{host}]" if ":" in host else host


def _ssl_reason(exc: ssl.SSLError) -> str:
    reason = getattr(exc, "reason", None)
    if isinstance(reason, str) and reason:
        return reason.lower().replace("_", " ")
    return str(exc)[:200]


def _lower(text: str) -> str:
    return text[:1].lower() + text[1:]
