"""``acmegw-hook``: the one program every ACME client calls to publish dns-01 values.

It turns a client's hook call into a request to the gateway (``POST`` to set up,
``DELETE`` to tear down, the native JSON body) and exits 0 only when the gateway
confirmed the change: 201 for a setup (the gateway answers that only once every
authoritative nameserver serves the value), 200 for a teardown. Anything else
ends with a non-zero status and ONE line on stderr saying what failed and what
to check.

Calling conventions (the first argument tells them apart)::

    mod_md     MDChallengeDns01:  setup DOMAIN VALUE | teardown DOMAIN [VALUE]
               MDMessageCmd:      renewed|installed|expiring|errored|... DOMAIN  (ignored, exit 0)
    certbot    no arguments; CERTBOT_DOMAIN and CERTBOT_VALIDATION in the environment;
               a cleanup when CERTBOT_AUTH_OUTPUT is set (even empty)
    dehydrated deploy_challenge|clean_challenge (DOMAIN TOKEN_FILE VALUE)...  (HOOK_CHAIN=yes:
               several triples); every other event, unknown ones included: exit 0, print nothing
    uacme      begin|done|failed TYPE IDENT TOKEN AUTH; a TYPE other than dns-01 is declined
               with exit status 1 (uacme then tries the next challenge type)
    lego exec  present|cleanup FQDN. VALUE [TTL];  EXEC_MODE=RAW: present|cleanup -- DOMAIN
               TOKEN KEY_AUTH (the value is then computed from KEY_AUTH)

A mod_md ``MDChallengeDns01Version 1`` teardown carries no value: the gateway then
removes every value this user set at that name (its journal knows them).

Settings come from the environment and from a dotenv-style file (``/etc/acmegw/hook.conf``,
or the file named by ``ACMEGW_HOOK_CONF``; keys are case-insensitive); the environment wins.
The original hook's names work as aliases.

================================  ==========  =========================================
setting                           alias       meaning
================================  ==========  =========================================
``ACMEGW_URL``                    API_URI     the gateway, e.g. ``https://gw.example.net:8000/``
``ACMEGW_USER``                   API_USER    basic-auth user (unset: no credentials sent)
``ACMEGW_PASSWORD``               API_PASSWD  its password ...
``ACMEGW_PASSWORD_FILE``                      ... or a file holding it (mode 600, or 640
                                              for root:<the hook's group>)
``ACMEGW_CA_FILE``                            CA bundle for the gateway's TLS certificate, or
                                              a c_rehash directory (default: the system's
                                              trust store)
``ACMEGW_TIMEOUT``                            bound on the whole run (default 150s)
``ACMEGW_LOG``                    LOGFILE     append a log of each run to this file
``ACMEGW_DNS_DELAY``              DNS_DELAY   extra sleep after a confirmed setup (bounded by
                                              the timeout); the gateway already waits
``ACMEGW_PROPAGATION_WAIT``                   ``1``: also check from here that every
                                              authoritative nameserver serves the value
``ACMEGW_PROPAGATION_NAMESERVERS``            check these servers (``IP[:PORT]``) instead
``ACMEGW_INSECURE_HTTP``                      ``1``: allow sending a password over plain
                                              http to a host that is not loopback
================================  ==========  =========================================

Secrets: never taken from the command line and never logged. hook.conf, the password file
and the CA file are refused if anyone but root and the hook's user may change them, and a
file holding a password if anyone outside the hook's group may read it
(:mod:`hooks.file_trust`). The log is created mode 640, never written through a link, and
held to the same rules (its group may write it when that is the hook's own).
A key in hook.conf that the hook does not read (a misspelling) is a warning line on stderr,
with the closest known name.

Behaviour the clients rely on: no child processes (a child keeping stderr open blocks
mod_md), stdin never read, closed standard descriptors tolerated, no ``PATH`` needed;
connection failures and 5xx answers are retried with back-off, 4xx are not, except that
a wait the gateway asks for with ``Retry-After`` (503: it is overloaded; 429 from its
failure limiter) is kept, a few times at most, when it ends within the run; the whole run
never takes longer than ``ACMEGW_TIMEOUT``. ``HTTPS_PROXY``/``HTTP_PROXY``/``ALL_PROXY`` and
``NO_PROXY`` in the environment are honoured as curl and requests read them (an ``http://``
proxy; the connection to an https gateway is tunnelled through it with CONNECT), except that
a loopback gateway is never proxied and a password never goes through a proxy in plaintext.

HTTP comes from the standard library (:mod:`hooks.transport`), not requests: the hook is a
new process for every call, and importing requests was most of what a call cost.

Exit status: 0 confirmed (or an event that needs nothing), 1 the change failed or a
challenge type was declined, 2 bad usage or settings.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import ssl
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import NamedTuple, NoReturn, TextIO
from urllib.parse import urlsplit

from hooks.file_trust import Untrusted, check_ca, check_private, open_log, read_trusted
from hooks.transport import (
    NoAnswer,
    Proxy,
    Reply,
    TLSFailure,
    TransportError,
    basic_authorization,
    exchange,
    proxy_for,
    tls_context,
)
from lib.names import InvalidValue, is_loopback_host, txt_value, validate_value, value_tag
from lib.settings import Settings, unknown_keys, unknown_message

PROG = "acmegw-hook"
DEFAULT_CONF = "/etc/acmegw/hook.conf"
DEFAULT_TIMEOUT = 150.0
# The most a single wait between attempts may be; the total is bounded by the timeout.
MAX_BACKOFF = 10.0
FIRST_BACKOFF = 0.5
CONNECT_TIMEOUT = 10.0
# Waits the gateway asks for with Retry-After (a 503: too many password checks or
# connections waiting; a 429 of its failure limiter): at most this many, each only
# if it ends before ACMEGW_TIMEOUT does.
MAX_ASKED_RETRIES = 3
# Such a wait is lengthened by a random part of up to this share of it (at least
# JITTER_MIN seconds), so that hooks turned away together do not come back together.
JITTER_SHARE = 0.25
JITTER_MIN = 0.5
# The gateway's own messages are shown to the user: keep them to a readable line.
MAX_MESSAGE = 300

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2

# mod_md MDMessageCmd reasons (mod_md 2.4+); any other first argument is treated alike.
MODMD_EVENTS = frozenset(
    {"renewing", "renewed", "installed", "expiring", "errored", "ocsp-renewed", "ocsp-errored"}
)
DEHYDRATED_EVENTS = frozenset(
    {"startup_hook", "exit_hook", "generate_csr", "deploy_cert", "deploy_ocsp", "sync_cert",
     "unchanged_cert", "invalid_challenge", "request_failure"}
)

_CONTROL = re.compile(r"[\x00-\x1f\x7f]+")

USAGE = f"""\
usage: {PROG} setup DOMAIN VALUE | teardown DOMAIN [VALUE]       (Apache mod_md)
       {PROG}            with CERTBOT_DOMAIN, CERTBOT_VALIDATION  (certbot manual hooks)
       {PROG} deploy_challenge|clean_challenge DOMAIN FILE VALUE...  (dehydrated)
       {PROG} begin|done|failed TYPE IDENT TOKEN AUTH             (uacme)
       {PROG} present|cleanup FQDN VALUE                         (lego exec)
Settings: ACMEGW_URL, ACMEGW_USER, ACMEGW_PASSWORD_FILE, ACMEGW_CA_FILE, ACMEGW_TIMEOUT,
ACMEGW_LOG, from the environment or /etc/acmegw/hook.conf (ACMEGW_HOOK_CONF).
"""


class HookError(Exception):
    """The run cannot succeed; the message is the one line shown on stderr."""

    status = EXIT_FAILED


class UsageError(HookError):
    """The client called us with arguments we do not understand."""

    status = EXIT_USAGE


class SettingsError(HookError):
    """The settings are incomplete, contradictory or unsafe."""

    status = EXIT_USAGE


# -- what the client asked for ------------------------------------------------


class Change(NamedTuple):
    """One value to publish or remove; ``value`` None removes every value we set there."""

    setup: bool
    domain: str
    value: str | None

    @property
    def action(self) -> str:
        return "setup" if self.setup else "teardown"


class Invocation(NamedTuple):
    """What a call means: changes to make, or an event to acknowledge, or a decline."""

    client: str
    changes: tuple[Change, ...] = ()
    event: str | None = None
    declined: str | None = None


def _check_value(value: str, what: str) -> str:
    try:
        return validate_value(value)
    except InvalidValue:
        raise UsageError(
            f"{what}: not a dns-01 TXT value (43 base64url characters expected)") from None


def _triples(client: str, setup: bool, args: Sequence[str]) -> tuple[Change, ...]:
    if not args or len(args) % 3:
        raise UsageError(f"{client}: expected DOMAIN TOKEN_FILE VALUE triples, got "
                         f"{len(args)} argument(s)")
    return tuple(
        Change(setup, args[i], _check_value(args[i + 2], f"{client} {args[i]}"))
        for i in range(0, len(args), 3)
    )


def parse_invocation(argv: Sequence[str], environ: Mapping[str, str]) -> Invocation:
    """Work out which client called and what it wants; :class:`UsageError` if unclear."""
    if not argv:
        if "CERTBOT_DOMAIN" in environ and "CERTBOT_VALIDATION" in environ:
            # certbot sets CERTBOT_AUTH_OUTPUT (possibly empty) only for the cleanup hook.
            setup = "CERTBOT_AUTH_OUTPUT" not in environ
            domain = environ["CERTBOT_DOMAIN"]
            validation = _check_value(environ["CERTBOT_VALIDATION"],
                                      f"certbot {'auth' if setup else 'cleanup'} {domain}")
            return Invocation("certbot", (Change(setup, domain, validation),))
        raise UsageError("no arguments and no CERTBOT_DOMAIN/CERTBOT_VALIDATION in the "
                         f"environment; see `{PROG} --help`")
    verb, args = argv[0], list(argv[1:])
    if verb in ("setup", "teardown"):
        if verb == "setup" and len(args) != 2:
            raise UsageError("mod_md: usage: setup DOMAIN VALUE")
        if verb == "teardown" and len(args) not in (1, 2):
            raise UsageError("mod_md: usage: teardown DOMAIN [VALUE]")
        value: str | None = (_check_value(args[1], f"{verb} {args[0]}") if len(args) == 2
                             else None)
        return Invocation("mod_md", (Change(verb == "setup", args[0], value),))
    if verb in ("deploy_challenge", "clean_challenge"):
        return Invocation("dehydrated", _triples("dehydrated", verb == "deploy_challenge", args))
    if verb in ("begin", "done", "failed"):
        if len(args) != 4:
            raise UsageError(f"uacme: usage: {verb} TYPE IDENT TOKEN AUTH")
        kind, ident, _token, auth = args
        if kind.lower() != "dns-01":
            return Invocation("uacme", declined=f"{kind} challenge for {ident} (only dns-01)")
        return Invocation("uacme", (Change(verb == "begin", ident,
                                           _check_value(auth, f"uacme {verb} {ident}")),))
    if verb in ("present", "cleanup"):
        setup = verb == "present"
        if len(args) == 4 and args[0] == "--":
            # EXEC_MODE=RAW: DOMAIN TOKEN KEY_AUTH; the TXT value is derived from KEY_AUTH.
            return Invocation("lego", (Change(setup, args[1], txt_value(args[3])),))
        if len(args) not in (2, 3):
            raise UsageError(f"lego exec: usage: {verb} FQDN VALUE")
        return Invocation("lego", (Change(setup, args[0],
                                          _check_value(args[1], f"lego {verb} {args[0]}")),))
    if verb in MODMD_EVENTS or verb.startswith("challenge-setup:"):
        return Invocation("mod_md", event=" ".join(argv))
    if verb in DEHYDRATED_EVENTS:
        return Invocation("dehydrated", event=verb)
    # dehydrated deliberately calls unknown event names and requires them to be ignored.
    return Invocation("unknown", event=verb)


# -- settings -------------------------------------------------------------------


class HookSettings(NamedTuple):
    url: str
    user: str | None = None
    password: str | None = None
    ca_file: str | None = None  # None: the system's trust store
    proxy: Proxy | None = None
    timeout: float = DEFAULT_TIMEOUT
    log_file: str | None = None
    dns_delay: float = 0.0
    propagation_wait: bool = False
    propagation_nameservers: tuple[str, ...] = ()

    def __repr__(self) -> str:  # never the password
        shown = ", ".join(f"{name}={value!r}" for name, value in self._asdict().items()
                          if name != "password")
        return f"HookSettings({shown})"


# Each setting and the original hook's name for it.
ALIASES: dict[str, tuple[str, ...]] = {
    "ACMEGW_URL": ("API_URI",),
    "ACMEGW_USER": ("API_USER",),
    "ACMEGW_CA_FILE": (),
    "ACMEGW_TIMEOUT": (),
    "ACMEGW_LOG": ("LOGFILE",),
    "ACMEGW_DNS_DELAY": ("DNS_DELAY",),
    "ACMEGW_PROPAGATION_WAIT": (),
    "ACMEGW_PROPAGATION_NAMESERVERS": (),
    "ACMEGW_INSECURE_HTTP": (),
}
PASSWORD_KEYS = ("ACMEGW_PASSWORD", "API_PASSWD")
# Every key hook.conf may hold: the ones read above.
CONF_KEYS = frozenset((*ALIASES, *(a for names in ALIASES.values() for a in names),
                       *PASSWORD_KEYS, "ACMEGW_PASSWORD_FILE"))


def _first(layer: Mapping[str, str], keys: Sequence[str]) -> str | None:
    for key in keys:
        value = layer.get(key)
        if value is not None and value.strip():
            return value
    return None


def _read_setting_file(path: str, what: str, limit: int) -> tuple[bytes, os.stat_result]:
    """*path* read as :func:`hooks.file_trust.read_trusted` does; :class:`SettingsError`
    starting with *what* if it is missing, unreadable or untrusted."""
    try:
        return read_trusted(path, limit)
    except Untrusted as exc:
        raise SettingsError(f"{what}{exc}") from None
    except OSError as exc:
        raise SettingsError(f"{what}cannot read {path}: {exc.strerror}"
                            f"{_as_whom(exc)}") from None


def _read_private(path: str, what: str) -> str:
    """Read a file that holds a secret (:func:`hooks.file_trust.check_private`)."""
    data, info = _read_setting_file(path, f"{what}: ", 1 << 16)
    try:
        check_private(path, info)
    except Untrusted as exc:
        raise SettingsError(f"{what}: {exc}") from None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise SettingsError(f"{what}: {path} is not UTF-8 text") from None


def _as_whom(exc: OSError) -> str:
    if isinstance(exc, PermissionError):
        return f" (the hook runs as {_user_name()}; make the file readable by that user only)"
    return ""


def _user_name() -> str:
    try:
        import pwd

        return pwd.getpwuid(os.geteuid()).pw_name
    except (ImportError, KeyError):
        return f"uid {os.geteuid()}"


def read_conf(path: str, required: bool) -> dict[str, str]:
    """The settings in a dotenv-style file (keys upper-cased); {} if absent and optional."""
    try:
        os.lstat(path)
    except FileNotFoundError:
        if required:
            raise SettingsError(f"ACMEGW_HOOK_CONF: {path} does not exist") from None
        return {}
    except OSError:
        pass  # a directory the hook may not enter, say: reading says so, with the fix
    data, info = _read_setting_file(path, "", 1 << 20)
    text = data.decode("utf-8", errors="replace")
    parsed = _plain_dotenv(text)
    if parsed is None:
        parsed = _python_dotenv(text, path)
    values = {k.upper(): v for k, v in parsed.items()}
    if _first(values, PASSWORD_KEYS):
        try:
            check_private(path, info)
        except Untrusted as exc:
            raise SettingsError(str(exc)) from None
    return values


# A hook.conf line that every python-dotenv version reads one way only: blank, a comment,
# or [export ]KEY=VALUE where VALUE is printable ASCII without spaces, quotes, "#" or
# backslashes, or is quoted ('...' or "...") without backslashes, before an optional
# comment. "export " is taken whenever it is there (?+), as python-dotenv takes it, so
# "export = x" is not read as a key named export. tests/hooks/test_conf.py checks all
# this against python-dotenv itself.
_PLAIN_LINE = re.compile(
    r"[ \t]*(?:#.*)?"
    r"|[ \t]*(?:export[ \t]+)?+([A-Za-z_][A-Za-z0-9_]*)[ \t]*=[ \t]*"
    r"(?:([!$-&(-\[\]-~]*)[ \t]*"
    r"|'([^'\\\r\n]*)'[ \t]*(?:#.*)?"
    r"|\"([^\"\\\r\n]*)\"[ \t]*(?:#.*)?)"
)


def _plain_dotenv(text: str) -> dict[str, str] | None:
    """*text* parsed as python-dotenv would, if every line is plain; else None.

    Loading python-dotenv costs each run some 5 ms (it brings logging, shutil and
    tempfile along), and mod_md makes four runs per certificate while it waits. A
    hook.conf as the README shows it is plain; anything else goes to python-dotenv.
    """
    if "\r" in text:
        return None
    values: dict[str, str] = {}
    for line in text.split("\n"):
        match = _PLAIN_LINE.fullmatch(line)
        if match is None:
            return None
        key, plain, single, double = match.groups()
        if key is not None:
            values[key] = next(v for v in (plain, single, double) if v is not None)
    return values


def _python_dotenv(text: str, path: str) -> dict[str, str]:
    """*text* parsed by python-dotenv; :class:`SettingsError` naming a line it cannot parse."""
    import logging

    from dotenv import dotenv_values

    complaints: list[str] = []

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            complaints.append(record.getMessage())

    # python-dotenv would print its complaint on stderr and go on without the line.
    logger = logging.getLogger("dotenv.main")
    collect = Collect()
    old = logger.propagate
    logger.addHandler(collect)
    logger.propagate = False
    try:
        # No ${VAR} expansion: a password is taken as written.
        parsed = dotenv_values(stream=io.StringIO(text), interpolate=False)
    finally:
        logger.removeHandler(collect)
        logger.propagate = old
    if complaints:
        line = re.search(r"line (\d+)", complaints[0])
        where = f" line {line.group(1)}" if line else ""
        raise SettingsError(f"{path}{where} cannot be parsed — write KEY=value, and quote a "
                            "value holding quotes or spaces ('...' or \"...\")")
    return {k: v for k, v in parsed.items() if v is not None}


def _password(layers: Sequence[tuple[str, Mapping[str, str]]]) -> str | None:
    """The password from the first layer that names one, directly or by file."""
    for where, layer in layers:
        direct = _first(layer, PASSWORD_KEYS)
        file_name = _first(layer, ("ACMEGW_PASSWORD_FILE",))
        if direct is not None and file_name is not None:
            raise SettingsError(f"{where} sets both ACMEGW_PASSWORD and ACMEGW_PASSWORD_FILE; "
                                "keep the file only")
        if direct is not None:
            return direct
        if file_name is not None:
            text = _read_private(file_name.strip(), "ACMEGW_PASSWORD_FILE")
            # As the gateway's <KEY>_FILE: the trailing newline is not part of the secret.
            text = text[:-2] if text.endswith("\r\n") else text.removesuffix("\n")
            if not text:
                raise SettingsError(f"ACMEGW_PASSWORD_FILE: {file_name.strip()} is empty")
            return text
    return None


def load_settings(environ: Mapping[str, str],
                  warn: Callable[[str], None] | None = None) -> HookSettings:
    """Settings from *environ* over the hook.conf file; :class:`SettingsError` if unusable.

    *warn* is told of each key in hook.conf that the hook does not read, before any
    error: a misspelled key often explains it.
    """
    named = environ.get("ACMEGW_HOOK_CONF", "").strip()
    conf_path = named or DEFAULT_CONF
    conf = read_conf(conf_path, required=bool(named))
    if warn is not None:
        for key, close in unknown_keys([key for key in conf if key not in CONF_KEYS], CONF_KEYS):
            warn(unknown_message(key, close, conf_path))
    layers: list[tuple[str, Mapping[str, str]]] = [("the environment", environ),
                                                   (str(conf_path), conf)]
    merged: dict[str, str] = {}
    for key, aliases in ALIASES.items():
        for _, layer in layers:
            value = _first(layer, (key, *aliases))
            if value is not None:
                merged[key] = value
                break
    settings = Settings(merged)
    url = settings.get("ACMEGW_URL")
    if url is None:
        raise SettingsError(f"ACMEGW_URL is not set (in the environment or {conf_path}); "
                            "set it to the gateway's address, e.g. https://gw.example.net:8000/")
    url = url.strip()
    if "@" in url:
        # Checked first, on the raw text: every later message shows the URL (mod_md logs
        # them), and a password holding "/", "?" or "#" would fool a URL parser into
        # showing part of it. A gateway's URL has no other use for "@".
        raise SettingsError("ACMEGW_URL holds a user name or password (user:password@host); "
                            "take it out: the user belongs in ACMEGW_USER and the password "
                            "in the file named by ACMEGW_PASSWORD_FILE (mode 600)")
    if any(ch.isspace() or not ch.isprintable() for ch in url):
        raise SettingsError(f"ACMEGW_URL={url!r} holds spaces or control characters")
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError for a port out of range
    except ValueError as exc:
        raise SettingsError(f"ACMEGW_URL={url!r} is not a usable URL ({exc})") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise SettingsError(f"ACMEGW_URL={url!r} is not an http:// or https:// URL")
    user = settings.get("ACMEGW_USER")
    if user is not None and (":" in user or _CONTROL.search(user) or not _is_utf8(user)):
        # Not shown: it may be the password put in the wrong place.
        raise SettingsError("ACMEGW_USER holds a ':', control characters or bytes that are "
                            "not UTF-8; basic auth cannot carry them — check the user name")
    password = _password(layers)
    if password is not None and not _is_utf8(password):
        # The codec's error would show the offending byte and where it sits.
        raise SettingsError("the password (ACMEGW_PASSWORD or ACMEGW_PASSWORD_FILE) holds "
                            "bytes that are not UTF-8 text, which the gateway reads it as")
    if user is None and password is not None:
        raise SettingsError("a password is set but ACMEGW_USER is not; set both or neither")
    if user is not None and password is None:
        raise SettingsError(f"ACMEGW_USER={user} has no password; set ACMEGW_PASSWORD_FILE "
                            "(a file only this user can read)")
    insecure = settings.boolean("ACMEGW_INSECURE_HTTP")
    if (parts.scheme == "http" and password is not None and not is_loopback_host(parts.hostname)
            and not insecure):
        raise SettingsError(f"ACMEGW_URL={url} would send the password in plaintext; "
                            "use https:// (or set ACMEGW_INSECURE_HTTP=1 if a tunnel protects it)")
    ca_file = settings.get("ACMEGW_CA_FILE")
    if ca_file is not None:
        if not os.access(ca_file, os.R_OK):
            raise SettingsError(f"ACMEGW_CA_FILE: cannot read {ca_file} as {_user_name()}")
        try:
            # Whoever may change it decides whom the hook takes for the gateway.
            check_ca(ca_file)
        except Untrusted as exc:
            raise SettingsError(f"ACMEGW_CA_FILE: {exc}") from None
    try:
        proxy = proxy_for(parts, environ)
    except ValueError as exc:
        raise SettingsError(f"the proxy for {url} (HTTPS_PROXY, HTTP_PROXY or ALL_PROXY in "
                            f"the environment): {exc}") from None
    if proxy is not None and parts.scheme == "http" and password is not None:
        # ACMEGW_INSECURE_HTTP vouches for the path to the gateway, not for a proxy.
        raise SettingsError(f"ACMEGW_URL={url} would hand the password to the proxy "
                            f"{proxy.host}:{proxy.port} in plaintext; use https:// (tunnelled "
                            "through the proxy with CONNECT) or name the host in NO_PROXY")
    nameservers: tuple[str, ...] = ()
    if settings.has("ACMEGW_PROPAGATION_NAMESERVERS"):
        # Imported only when needed: dnspython costs a hook run some 70 ms to load.
        from lib.dnscheck import nameservers_from_settings

        nameservers = nameservers_from_settings(settings, "ACMEGW_PROPAGATION_NAMESERVERS")
    result = HookSettings(
        url=url,
        user=user,
        password=password,
        ca_file=ca_file,
        proxy=proxy,
        timeout=settings.duration("ACMEGW_TIMEOUT", DEFAULT_TIMEOUT, 1.0, 3600.0),
        log_file=settings.get("ACMEGW_LOG"),
        dns_delay=settings.duration("ACMEGW_DNS_DELAY", 0.0, 0.0, 3600.0),
        propagation_wait=settings.boolean("ACMEGW_PROPAGATION_WAIT") or bool(nameservers),
        propagation_nameservers=nameservers,
    )
    if settings.problems:
        raise SettingsError("; ".join(settings.problems))
    return result


# -- talking to the gateway ---------------------------------------------------------


class Deadline:
    """The run's time budget (``ACMEGW_TIMEOUT``), on the monotonic clock."""

    def __init__(self, seconds: float) -> None:
        self.total = seconds
        self.start = time.monotonic()
        self.end = self.start + seconds

    def remaining(self) -> float:
        return max(0.0, self.start + self.total - time.monotonic())

    def elapsed(self) -> float:
        return time.monotonic() - self.start


def _is_utf8(text: str) -> bool:
    """False for a str holding bytes that were not UTF-8 (os.environ keeps them as lone
    surrogates)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _one_line(text: str) -> str:
    line = _CONTROL.sub(" ", text).strip()
    return line if len(line) <= MAX_MESSAGE else line[: MAX_MESSAGE - 3] + "..."


def _message(response: Reply) -> str:
    """The gateway's ``message`` (or the body's start) as one short line."""
    message = (response.json_object() or {}).get("message")
    if isinstance(message, str):
        return _one_line(message)
    return _one_line(response.text[:MAX_MESSAGE] or response.reason or "")


def _retry_after(response: Reply) -> float | None:
    """The seconds ``Retry-After`` asks for (delta-seconds, or an HTTP-date); None when
    the field is absent or unreadable."""
    text = (response.retry_after or "").strip()
    if text.isascii() and text.isdigit():
        return float(int(text[:12]))  # beyond any run's timeout anyway
    if not text:
        return None
    # Only for a date, which the gateway never sends: email costs a run some 9 ms to load.
    from datetime import UTC
    from email.utils import parsedate_to_datetime

    try:
        when = parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    if when.tzinfo is None:  # "-0000"; an HTTP-date is always GMT
        when = when.replace(tzinfo=UTC)
    return float(max(0, -((time.time() - when.timestamp()) // 1)))  # whole seconds, up


def _asked_to_wait(response: Reply) -> float | None:
    """How long the gateway asks to be left alone when trying again after that may
    succeed: a 503 with ``Retry-After`` (password checks or connections queue up
    there), or a 429 with it from the failure limiter (too many failed logins from
    this address, maybe other callers'). None otherwise: any other 4xx, a 401 above
    all, is an answer that trying again would not change (nor a wrong password)."""
    if response.status == 503 or (
        response.status == 429
        and (response.json_object() or {}).get("error") == "too_many_requests"
    ):
        return _retry_after(response)
    return None


def _jitter(wait: float, room: float) -> float:
    """A random lengthening of *wait*, at most *room*; os.urandom rather than the random
    module, which a run would otherwise load for this alone."""
    spread = min(max(JITTER_MIN, wait * JITTER_SHARE), room)
    return spread * int.from_bytes(os.urandom(2), "big") / 65536


def _hint(status: int, message: str, settings: HookSettings) -> str:
    if status == 400:
        return "check the arguments the ACME client passed"
    if status == 401:
        if settings.user is None:
            return "the gateway wants a password: set ACMEGW_USER and ACMEGW_PASSWORD_FILE"
        return (f"check ACMEGW_USER={settings.user} and its password "
                "(ACMEGW_PASSWORD_FILE) against the gateway's password file")
    if status == 403:
        if "client address" in message:
            return "check ALLOWED_HOSTS on the gateway"
        return "check the user's domains in the password file and the gateway's DNSAPI_DOMAINS"
    if status == 429:
        return ("too many failed logins from this host: check the password, then wait "
                "before trying again")
    if status in (404, 405) or 300 <= status < 400:
        return f"check ACMEGW_URL={settings.url}"
    if status in (502, 504):
        return "check the gateway's log and its DNS provider"
    if status == 503:
        return "check the gateway's state directory (disk full? read-only?)"
    return "check the gateway's log"


class Confirmed(NamedTuple):
    fqdn: str
    attempts: int


def _confirmation(change: Change, response: Reply, settings: HookSettings) -> str:
    """The fqdn from a 2xx answer that really is the gateway's, else :class:`HookError`."""
    body = response.json_object() or {}
    fqdn = body.get("fqdn")
    if not isinstance(fqdn, str) or (change.value is not None
                                     and body.get("value") != change.value):
        raise HookError(f"{change.action} {change.domain}: HTTP {response.status} but "
                        "not the answer an acmegw gateway gives — check ACMEGW_URL="
                        f"{settings.url}")
    return fqdn


class GatewayClient:
    """Sends changes to the gateway, retrying what may succeed on a later try."""

    def __init__(self, settings: HookSettings, deadline: Deadline, log: RunLog | None = None,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        self.settings = settings
        self.deadline = deadline
        self.log = log or RunLog()
        self._sleep = sleep
        self._url = urlsplit(settings.url)
        self._context: ssl.SSLContext | None = None
        self._headers = {}
        if settings.user is not None and settings.password is not None:
            self._headers["Authorization"] = basic_authorization(settings.user,
                                                                 settings.password)

    def _tls(self) -> ssl.SSLContext | None:
        if self._url.scheme != "https":
            return None
        if self._context is None:
            try:
                self._context = tls_context(self.settings.ca_file)
            except (OSError, ValueError) as exc:
                # ssl.SSLError is an OSError: a CA file that holds no certificate.
                raise HookError(f"ACMEGW_CA_FILE: {self.settings.ca_file} holds no usable CA "
                                f"certificate ({_one_line(str(exc))[:120]}) — give the PEM "
                                "file of the CA that signed the gateway's certificate") from None
        return self._context

    def send(self, change: Change, client: str) -> Confirmed:
        what = f"{change.action} {change.domain}"
        fields: dict[str, str] = {"argument": change.action, "domain_name": change.domain}
        if change.value is not None:
            fields["challenge_content"] = change.value
        body = json.dumps(fields).encode()
        method = "POST" if change.setup else "DELETE"
        expected = 201 if change.setup else 200
        headers = {**self._headers, "User-Agent": f"{PROG} ({client})"}
        context = self._tls()
        backoff = FIRST_BACKOFF
        attempts = asked_retries = 0
        while True:
            attempts += 1
            problem: str
            status: int | None = None
            asked: float | None = None
            try:
                response = exchange(method, self._url, body, headers, context=context,
                                    proxy=self.settings.proxy, deadline=self.deadline.end,
                                    connect_timeout=CONNECT_TIMEOUT)
            except TransportError as exc:
                reason = _one_line(str(exc))
                if isinstance(exc, TLSFailure):
                    raise HookError(f"{what}: TLS with {self.settings.url} failed: {reason} — "
                                    "check ACMEGW_CA_FILE (the CA that signed the gateway's "
                                    "certificate) and the host name in ACMEGW_URL") from None
                if not exc.retry:
                    raise HookError(f"{what}: {self.settings.url} did not answer in HTTP "
                                    f"({reason}) — check ACMEGW_URL={self.settings.url}") from None
                if isinstance(exc, NoAnswer):
                    problem = f"no answer from {self.settings.url} ({reason})"
                else:
                    proxy = self.settings.proxy
                    via = f" through the proxy {proxy.host}:{proxy.port}" if proxy else ""
                    problem = f"cannot reach {self.settings.url}{via} ({reason})"
            else:
                status = response.status
                if status == expected:
                    return Confirmed(_confirmation(change, response, self.settings), attempts)
                message = _message(response)
                problem = f"gateway answered {status}" + (f": {message}" if message else "")
                asked = _asked_to_wait(response)
                if status < 500 and asked is None:
                    raise HookError(f"{what}: {problem} — "
                                    f"{_hint(status, message, self.settings)}")
            if asked is not None:
                asked_retries += 1
                wait = self._asked_wait(what, problem, status, asked, asked_retries, attempts)
            else:
                wait = backoff
                backoff = min(backoff * 2, MAX_BACKOFF)
            if self.deadline.remaining() <= wait:
                hint = (_hint(status, problem, self.settings) if status is not None else
                        f"check that the gateway runs and ACMEGW_URL={self.settings.url} "
                        "is right")
                raise HookError(
                    f"{what}: {problem}; gave up after {attempts} attempt(s) in "
                    f"{self.deadline.elapsed():.0f}s (ACMEGW_TIMEOUT="
                    f"{self.settings.timeout:g}s) — {hint}")
            self.log.warning("%s: %s; attempt %d, trying again in %.1fs", what, problem,
                             attempts, wait)
            self._sleep(wait)

    def _asked_wait(self, what: str, problem: str, status: int | None, asked: float,
                    retries: int, attempts: int) -> float:
        """The wait before retry number *retries* that the gateway asked for (*asked*
        seconds, plus jitter); :class:`HookError` when that is one retry too many or
        would end past ACMEGW_TIMEOUT."""
        if status == 429:
            hint = ("too many failed logins from this host: check the passwords of "
                    "everything on it that uses the gateway")
        else:
            hint = ("the gateway is overloaded: check its log, and AUTH_QUEUE_SIZE, "
                    "AUTH_QUEUE_WAIT and MAX_CONNECTIONS there")
        timeout = f"ACMEGW_TIMEOUT={self.settings.timeout:g}s"
        if retries > MAX_ASKED_RETRIES:
            raise HookError(f"{what}: {problem}; gave up after {attempts} attempt(s) in "
                            f"{self.deadline.elapsed():.0f}s, each after the wait the gateway "
                            f"asked for ({timeout}) — {hint}")
        room = self.deadline.remaining() - asked
        if room <= 0:
            raise HookError(f"{what}: {problem}; not tried again: the gateway asks for a wait "
                            f"of {asked:.0f}s, and {timeout} leaves "
                            f"{self.deadline.remaining():.0f}s — {hint}")
        return asked + _jitter(asked, room / 2)


# -- the run ----------------------------------------------------------------


def _wait_served(fqdn: str, value: str, settings: HookSettings, deadline: Deadline,
                 log: RunLog) -> None:
    """Check from here that every authoritative nameserver serves *value*."""
    import asyncio
    import logging

    from lib.dnscheck import PropagationError, PropagationSettings, wait_for_txt

    class ToRunLog(logging.Handler):
        """What lib.dnscheck logs (it serves the gateway too) goes to this run's log."""

        def emit(self, record: logging.LogRecord) -> None:
            log.write(record.levelname, record.getMessage())

    checker = logging.getLogger("lib.dnscheck")
    forward = ToRunLog(logging.INFO)
    checker.addHandler(forward)
    old_level = checker.level
    checker.setLevel(logging.INFO)

    remaining = deadline.remaining()
    if remaining <= 0:
        raise HookError(f"setup {fqdn}: no time left to check propagation "
                        f"(ACMEGW_TIMEOUT={settings.timeout:g}s)")
    wanted = PropagationSettings(nameservers=settings.propagation_nameservers,
                                 timeout=remaining)
    try:
        asyncio.run(wait_for_txt(fqdn, value, wanted))
    except PropagationError as exc:
        raise HookError(f"setup {fqdn}: the gateway confirmed, but from here {exc} — check "
                        "ACMEGW_PROPAGATION_NAMESERVERS and that this host reaches the "
                        "zone's nameservers") from None
    finally:
        checker.removeHandler(forward)
        checker.setLevel(old_level)


def perform(invocation: Invocation, settings: HookSettings, client: GatewayClient) -> None:
    """Make every change in *invocation*; raise :class:`HookError` on the first failure.

    Setups stop at the first failure (the client will not validate anyway);
    teardowns are all tried, so one failure leaves no other record behind.
    """
    deadline, log = client.deadline, client.log
    failures: list[HookError] = []
    for change in invocation.changes:
        tag = value_tag(change.value) if change.value else "all"
        log.info("%s %s %s (value %s) as %s", invocation.client, change.action, change.domain,
                 tag, _user_name())
        try:
            confirmed = client.send(change, invocation.client)
            if change.setup and settings.propagation_wait and change.value is not None:
                _wait_served(confirmed.fqdn, change.value, settings, deadline, log)
        except HookError as exc:
            log.error("%s", exc)
            if change.setup:
                raise
            failures.append(exc)
            continue
        log.info("%s %s: confirmed for %s after %.2fs (%d attempt(s))", change.action,
                 change.domain, confirmed.fqdn, deadline.elapsed(), confirmed.attempts)
    if failures:
        first = failures[0]
        more = f" (and {len(failures) - 1} more)" if len(failures) > 1 else ""
        raise HookError(f"{first}{more}")
    if any(c.setup for c in invocation.changes) and settings.dns_delay:
        delay = min(settings.dns_delay, deadline.remaining())
        log.info("sleeping %.1fs (DNS_DELAY)", delay)
        time.sleep(delay)


class RunLog:
    """This run's log: lines appended to ``ACMEGW_LOG``, or nowhere (never stderr).

    Not the logging module: a run is a short process of its own with one place to
    write, and loading logging cost some 5 ms of each of mod_md's four calls per
    certificate. The lines look as a ``logging`` file handler would write them.
    """

    def __init__(self, path: str | None = None) -> None:
        self.problem: str | None = None
        self._file: TextIO | None = None
        if path:
            try:
                # Non-blocking: a FIFO nobody reads would block the open, and each write.
                fd = open_log(path)
                self._file = open(fd, "a", encoding="utf-8",  # noqa: SIM115 - close()
                                  errors="backslashreplace")
            except Untrusted as exc:
                self.problem = f"{PROG}: ACMEGW_LOG: {exc}; going on without it"
            except OSError as exc:
                self.problem = (f"{PROG}: cannot write the log {path}: {exc.strerror}; "
                                "going on without it")

    def info(self, message: str, *args: object) -> None:
        self.write("INFO", message % args if args else message)

    def warning(self, message: str, *args: object) -> None:
        self.write("WARNING", message % args if args else message)

    def error(self, message: str, *args: object) -> None:
        self.write("ERROR", message % args if args else message)

    def write(self, level: str, text: str) -> None:
        if self._file is None:
            return
        now = time.time()
        stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(now))
        # One line per entry, whatever a name from the client's arguments holds.
        text = _CONTROL.sub(" ", text)
        with contextlib.suppress(OSError, ValueError):
            self._file.write(f"{stamp},{int(now % 1 * 1000):03d} {PROG}[{os.getpid()}] "
                             f"{level} {text}\n")
            self._file.flush()

    def close(self) -> None:
        if self._file is not None:
            with contextlib.suppress(OSError):
                self._file.close()
            self._file = None


@contextlib.contextmanager
def _log_to(path: str | None) -> Iterator[RunLog]:
    """This run's :class:`RunLog`, closed at the end; a log that cannot be opened is
    said once on stderr, and the run goes on without it."""
    log = RunLog(path)
    if log.problem:
        _say(log.problem)
    try:
        yield log
    finally:
        log.close()


def _say(line: str) -> None:
    """*line* on stderr, as one line: mod_md logs each line it reads there on its own, and
    a name from the client's arguments must not start a line that looks like ours."""
    stream = sys.stderr
    if stream is not None:
        with contextlib.suppress(OSError, ValueError):
            stream.write(_CONTROL.sub(" ", line) + "\n")
            stream.flush()


def _open_standard_descriptors() -> None:
    """Give closed stdin/stdout/stderr /dev/null, so no socket or file lands on them.

    mod_md runs the hook with stdin closed; a socket opened as fd 0..2 could otherwise
    receive our error line, or be read as our input.
    """
    for fd in (0, 1, 2):
        try:
            os.fstat(fd)
        except OSError:
            new = os.open(os.devnull, os.O_RDWR)
            if new != fd:
                os.dup2(new, fd)
                os.close(new)


def run(argv: Sequence[str], environ: Mapping[str, str]) -> int:
    """The whole hook, with its inputs explicit (``main`` passes the real ones)."""
    if argv and argv[0] in ("-h", "--help"):
        sys.stdout.write(USAGE)
        return EXIT_OK
    try:
        invocation = parse_invocation(argv, environ)
    except UsageError as exc:
        _say(f"{PROG}: {exc}")
        return exc.status
    if invocation.event is not None or invocation.declined is not None:
        # Events and declines need no settings: a missing hook.conf must not break them.
        try:
            log_file = load_settings(environ).log_file
        except HookError:
            log_file = None
        with _log_to(log_file) as log:
            if invocation.event is not None:
                log.info("%s event %s: nothing to do", invocation.client, invocation.event)
                return EXIT_OK
            log.info("%s: declining %s", invocation.client, invocation.declined)
            return EXIT_FAILED
    try:
        settings = load_settings(environ, warn=lambda text: _say(f"{PROG}: warning: {text}"))
    except HookError as exc:
        _say(f"{PROG}: {exc}")
        return exc.status
    with _log_to(settings.log_file) as log:
        client = GatewayClient(settings, Deadline(settings.timeout), log)
        try:
            perform(invocation, settings, client)
        except HookError as exc:
            _say(f"{PROG}: {exc}")
            return exc.status
    return EXIT_OK


def main(argv: Sequence[str] | None = None) -> int:
    _open_standard_descriptors()
    try:
        return run(list(sys.argv[1:] if argv is None else argv), os.environ)
    except Exception as exc:
        # A bug must still end as one line: mod_md logs every stderr line on its own.
        _say(f"{PROG}: internal error: {type(exc).__name__}: {_one_line(str(exc))} — "
             "please report this")
        return EXIT_FAILED


def console() -> NoReturn:
    """The ``acmegw-hook`` command: :func:`main`, then exit without tearing the interpreter
    down. A run is short and mod_md starts four per certificate while the order waits;
    the teardown of the modules it loaded cost about 5 ms of each. Output is flushed
    first, and the log was closed by :func:`run`."""
    status = main()
    for stream in (sys.stdout, sys.stderr):
        if stream is not None:
            with contextlib.suppress(OSError, ValueError):
                stream.flush()
    os._exit(status)


if __name__ == "__main__":
    console()
