"""The gateway's configuration: command line > environment > dotenv file.

Every setting of the original ACME-dns01-gateway keeps its name and meaning
(``-l/--listen``, ``-e/--dotenv``, ``-m``/``-c``, ``--ssl_cert``/``--ssl_key``,
``DNSAPI_*``, ``LISTEN*``, ``ALLOWED_HOSTS``, ``ALLOWED_PROXIES``, ``PROXY_XFF``,
``BASIC_AUTH``, ``ALL_PROXY``); dotenv keys are case-insensitive, as they were.
:func:`load` reads all sources once into frozen dataclasses and reports every
problem at once (:class:`lib.settings.ConfigError`), including insecure
combinations: no authentication at all, or passwords over plaintext HTTP on a
non-loopback address without ``INSECURE_HTTP=1``.
"""

from __future__ import annotations

import argparse
import ipaddress
import re
import urllib.parse
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path

from dotenv import dotenv_values

from lib.acme.cas import directory_url
from lib.acme.errors import UsageError
from lib.acme.identifiers import dns_identifier
from lib.dnscheck import PropagationSettings
from lib.names import InvalidName, challenge_name, is_loopback_host, is_within, normalize_name
from lib.settings import ConfigError, Settings

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

DEFAULT_PORT = 8000
DEFAULT_DOTENV = Path(".env")
DEFAULT_USERS_FILE = "acmepasswd"


class AuthMode(Enum):
    """``BASIC_AUTH``: how passwords and the host allowlist combine."""

    OFF = "off"  # host allowlist only
    SUFFICIENT = "sufficient"  # a valid password OR an allowed host
    REQUIRED = "required"  # a valid password AND (if hosts are set) an allowed host


_AUTH_WORDS = {
    "": AuthMode.OFF,
    "none": AuthMode.OFF,
    "disabled": AuthMode.OFF,
    "off": AuthMode.OFF,
    "no": AuthMode.OFF,
    "false": AuthMode.OFF,
    "0": AuthMode.OFF,
    "sufficient": AuthMode.SUFFICIENT,
    "required": AuthMode.REQUIRED,
}


@dataclass(frozen=True)
class Listener:
    """One address to listen on; ``host`` ``None`` means every interface."""

    host: str | None
    port: int

    @property
    def is_loopback(self) -> bool:
        return self.host is not None and is_loopback_host(self.host)

    def __str__(self) -> str:
        host = self.host or "*"
        return f"[{host}]:{self.port}" if ":" in host else f"{host}:{self.port}"


@dataclass(frozen=True)
class TLSFiles:
    cert: Path
    key: Path


@dataclass(frozen=True)
class AcmeTLSConfig:
    """``SSL_ACME_*``: the gateway obtains and renews its own certificate (gateway.tls_acme)."""

    server: str  # the CA's directory URL
    domains: tuple[str, ...]  # the names to order, ``*.`` kept for a wildcard
    email: str | None
    ca_file: Path | None  # trust for the CA's HTTPS, never for the gateway's clients
    retry_delay: float  # the first wait after a failed attempt, doubling
    # External account binding, for CAs that require it (ZeroSSL, Google): the key id
    # and the MAC key as the CA's console shows it (base64url).
    eab_kid: str | None = None
    eab_hmac_key: str | None = field(default=None, repr=False)


# Where the gateway keeps its own certificate: lib.acme's state directory layout
# (accounts/, certificates/<name>/ with versions switched by one link) under STATE_DIR.
ACME_STATE = "acme"
ACME_LINEAGE = "gateway"


def acme_files(state_dir: Path) -> TLSFiles:
    """The files the gateway serves when it keeps its own certificate."""
    folder = state_dir / ACME_STATE / "certificates" / ACME_LINEAGE
    return TLSFiles(folder / "fullchain.pem", folder / "privkey.pem")


@dataclass(frozen=True)
class AuthConfig:
    mode: AuthMode
    allowed_hosts: tuple[IPNetwork, ...]
    allowed_proxies: tuple[IPNetwork, ...]
    proxy_header: str | None
    passwd_file: Path | None
    cache_ttl: float = 60.0
    max_failures: int = 10
    failure_window: float = 60.0
    # Password checks that may wait for a hashing thread, and for how long (then 503).
    queue_size: int = 64
    queue_wait: float = 5.0


@dataclass(frozen=True)
class PropagationConfig:
    """``PROPAGATION_CHECK`` and how to wait (``PROPAGATION_*``, ``DNS_DELAY``)."""

    check: bool
    wait: PropagationSettings

    @property
    def nameservers(self) -> tuple[str, ...]:
        return self.wait.nameservers

    @property
    def timeout(self) -> float:
        return self.wait.timeout

    @property
    def delay(self) -> float:
        return self.wait.delay


@dataclass(frozen=True)
class ConnectionLimits:
    """How long a connection may take to send a request, and how many may be open."""

    header_timeout: float = 10.0  # from accept (TLS handshake included) to a complete head
    body_timeout: float = 10.0  # to receive a request body
    idle_timeout: float = 30.0  # a kept-alive connection waiting for its next request
    max_connections: int = 1024
    max_per_client: int = 32  # per address (IPv6: per /64); ALLOWED_PROXIES are exempt


@dataclass(frozen=True)
class AcmeDnsConfig:
    """The acme-dns protocol (``/update``, ``/register``, ``/health``)."""

    register: bool
    zone: str | None  # where registered accounts' names live: <subdomain>.<zone>
    keep: int  # newest values kept per account
    accounts_file: Path | None


@dataclass(frozen=True)
class DatabaseConfig:
    """``DATABASE_URL``: the PostgreSQL database that replicas share (:mod:`gateway.state`).

    ``url`` never holds the password (it may be logged and shown); ``password``
    comes from the URL, ``DATABASE_PASSWORD`` or ``DATABASE_PASSWORD_FILE``, or
    is None and libpq finds one itself (``PGPASSFILE``, ``~/.pgpass``).
    """

    url: str
    password: str | None = field(default=None, repr=False)
    # Connections one process may open; changes may hold all but a quarter of them.
    pool_size: int = 20
    # How long a request waits for a connection before the answer is 503.
    timeout: float = 10.0


@dataclass(frozen=True)
class Config:
    listeners: tuple[Listener, ...]
    tls: TLSFiles | None
    tls_reload_interval: float
    insecure_http: bool
    auth: AuthConfig
    managed_domains: tuple[str, ...]
    state_dir: Path
    record_max_age: float
    janitor_interval: float
    propagation: PropagationConfig
    provider_timeout: float
    max_body: int
    log_level: str
    log_format: str
    config_dir: Path | None
    check_only: bool = False
    # --check-delegation NAME: check that name's delegation instead of serving.
    check_delegation: str | None = None
    # Delegated challenge names: (base name, record name it is CNAMEd to).
    delegations: tuple[tuple[str, str], ...] = ()
    httpreq_prefix: str = ""
    acmedns: AcmeDnsConfig = AcmeDnsConfig(False, None, 2, None)
    # Values one user (acme-dns account, allowed host) may have published at once; 0: no cap.
    max_records_per_user: int = 1000
    connections: ConnectionLimits = ConnectionLimits()
    # PostgreSQL shared by replicas; None: SQLite files in state_dir.
    database: DatabaseConfig | None = None
    # Said at start-up, not fatal (gateway.checks): unknown settings, users outside
    # DNSAPI_DOMAINS, a password file others may read.
    warnings: tuple[str, ...] = ()
    # SSL_ACME_*: ``tls`` then names the files in STATE_DIR that the gateway keeps itself.
    tls_acme: AcmeTLSConfig | None = None


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="acmegw-server",
        description="Restricted gateway for ACME dns-01 challenges. Settings come from the "
        "command line, then the environment, then the dotenv file; see README.md.",
    )
    p.add_argument(
        "-l",
        "--listen",
        action="append",
        metavar="[IP:]PORT",
        help="address to listen on: PORT, IP, IP:PORT or [IPv6]:PORT; repeat or "
        "separate with commas for several (default *:8000)",
    )
    p.add_argument(
        "-e",
        "--dotenv",
        type=Path,
        metavar="FILE",
        help="dotenv file to read settings from (default ./.env if present)",
    )
    p.add_argument("-m", "--dnsapi_module", metavar="MODULE", help="provider module (original API)")
    p.add_argument("-c", "--dnsapi_class", metavar="CLASS", help="provider class in MODULE")
    p.add_argument("--ssl_cert", type=Path, metavar="FILE", help="TLS certificate chain (PEM)")
    p.add_argument("--ssl_key", type=Path, metavar="FILE", help="TLS private key (PEM)")
    p.add_argument(
        "--check-config",
        action="store_true",
        help="check the configuration, print a summary and exit",
    )
    p.add_argument(
        "--check-delegation",
        metavar="NAME",
        help="check that the CA will find at _acme-challenge.NAME what this gateway writes "
        "(public DNS, CNAME, nameservers, a probe value written and removed) and exit: "
        "0 right, 1 wrong, 2 usage or configuration errors",
    )
    return p


def gather(
    argv: Sequence[str] | None, environ: Mapping[str, str]
) -> tuple[Settings, argparse.Namespace, Path | None]:
    """Merge the three sources into one :class:`Settings` (CLI > environment > dotenv)."""
    args = parser().parse_args(argv)
    problems: list[str] = []
    dotenv_path: Path | None = args.dotenv or (
        Path(environ["DOTENV"]) if environ.get("DOTENV") else None
    )
    merged: dict[str, str] = {}
    from_file: dict[str, str] = {}
    if dotenv_path is not None and not dotenv_path.is_file():
        problems.append(f"dotenv file {dotenv_path} does not exist")
    elif dotenv_path is None and DEFAULT_DOTENV.is_file():
        dotenv_path = DEFAULT_DOTENV
    if dotenv_path is not None and dotenv_path.is_file():
        try:
            values = dotenv_values(dotenv_path, interpolate=False)
        except (OSError, UnicodeDecodeError) as exc:
            problems.append(f"cannot read dotenv file {dotenv_path}: {exc}")
        else:
            # The original upper-cased dotenv keys; "last entry wins" as before.
            for key, value in values.items():
                merged[key.strip().upper()] = "" if value is None else value
                from_file[key.strip().upper()] = str(dotenv_path)
    merged.update(environ)
    cli = {
        "DNSAPI_MODULE": args.dnsapi_module,
        "DNSAPI_CLASS": args.dnsapi_class,
        "SSL_CERT": str(args.ssl_cert) if args.ssl_cert else None,
        "SSL_KEY": str(args.ssl_key) if args.ssl_key else None,
        "LISTEN": ",".join(args.listen) if args.listen else None,
    }
    merged.update({k: v for k, v in cli.items() if v is not None})
    settings = Settings(merged)
    settings.problems.extend(problems)
    settings.file_keys = from_file
    config_dir = dotenv_path.resolve().parent if dotenv_path is not None else None
    return settings, args, config_dir


def _split_host_port(text: str) -> tuple[str | None, int | None]:
    """``PORT``, ``IP``, ``IP:PORT``, ``[IPv6]:PORT``, bare IPv6, ``*``, ``*:PORT``."""
    text = text.strip()
    if text.isdigit():
        return None, int(text)
    if text.startswith("["):
        host, sep, rest = text[1:].partition("]")
        if not sep or (rest and not rest.startswith(":")):
            raise ValueError("bad [IPv6]:port")
        return host, int(rest[1:]) if rest else None
    if text.count(":") == 1:
        host, port = text.split(":")
        return host, int(port)
    return text, None  # an IPv4 address, "*", a bare IPv6 address or "localhost"


def _listeners(settings: Settings) -> tuple[Listener, ...]:
    default_port = settings.integer("LISTEN_PORT", DEFAULT_PORT, 1, 65535)
    default_host = settings.get("LISTEN_IP")
    specs = settings.items("LISTEN")
    if not specs:
        specs = [default_host or "*"]
    result: list[Listener] = []
    for spec in specs:
        try:
            host, port = _split_host_port(spec)
        except ValueError:
            settings.problem(f"LISTEN: {spec!r} is not PORT, IP, IP:PORT or [IPv6]:PORT")
            continue
        if host is None:
            host = default_host
        if host in ("*", "", None):
            host = None
        elif host != "localhost":
            try:
                host = str(ipaddress.ip_address(host))
            except ValueError:
                settings.problem(f"LISTEN: {host!r} is not an IP address")
                continue
        port = port if port is not None else default_port
        if not 0 <= port < 65536:  # 0: any free port (tests)
            settings.problem(f"LISTEN: port {port} is out of range")
            continue
        result.append(Listener(host, port))
    return tuple(dict.fromkeys(result))


def parse_network(text: str) -> IPNetwork:
    """An address or a network; ValueError with the reason (host bits set, say).

    ``192.0.2.10/0`` is refused rather than read as ``0.0.0.0/0``: whoever wrote
    it meant one of two very different things, and widening a typo to every
    address is the worst guess.
    """
    try:
        return ipaddress.ip_network(text, strict=True)
    except ValueError as exc:
        if "has host bits set" not in str(exc):
            raise ValueError(f"{text!r} is not an IPv4/IPv6 address or network") from None
    address, _, _ = text.partition("/")
    network = ipaddress.ip_network(text, strict=False)
    raise ValueError(
        f"{text!r} has host bits set: write {address} for that address alone, or {network} "
        "for the whole network"
    )


def everything_in(nets: tuple[IPNetwork, ...]) -> list[str]:
    """The address families (``IPv4``, ``IPv6``) of which *nets* hold every address.

    IPv4-mapped IPv6 networks (``::ffff:0:0/96``) count for IPv4: a dual-stack
    listener sees IPv4 clients that way.
    """
    v4: list[ipaddress.IPv4Network] = []
    v6: list[ipaddress.IPv6Network] = []
    mapped = ipaddress.IPv6Network("::ffff:0:0/96")
    for net in nets:
        if isinstance(net, ipaddress.IPv4Network):
            v4.append(net)
            continue
        v6.append(net)
        if net.supernet_of(mapped):
            v4.append(ipaddress.IPv4Network("0.0.0.0/0"))
        elif net.subnet_of(mapped):
            v4.append(
                ipaddress.IPv4Network((int(net.network_address) & 0xFFFFFFFF, net.prefixlen - 96))
            )
    families = []
    if any(n.prefixlen == 0 for n in ipaddress.collapse_addresses(v4)):
        families.append("IPv4")
    if any(n.prefixlen == 0 for n in ipaddress.collapse_addresses(v6)):
        families.append("IPv6")
    return families


def _networks(settings: Settings, key: str) -> tuple[IPNetwork, ...]:
    nets: list[IPNetwork] = []
    for item in settings.items(key):
        try:
            nets.append(parse_network(item))
        except ValueError as exc:
            # The original ignored bad entries; a typo in an allowlist should stop us instead.
            settings.problem(f"{key}: {exc}")
    return tuple(nets)


def _open_to_all(settings: Settings, mode: AuthMode, hosts: tuple[IPNetwork, ...],
                 proxies: tuple[IPNetwork, ...]) -> None:
    """Refuse a combination that lets every address in without a password, or lets
    every client claim an address of its choosing."""
    claimed = everything_in(proxies)
    if claimed and (mode is AuthMode.REQUIRED or not hosts):
        # Passwords still hold, but every client is a "proxy" naming its own address:
        # each claim is a fresh AUTH_MAX_FAILURES budget and exempt from
        # MAX_CONNECTIONS_PER_CLIENT.
        settings.problem(
            f"ALLOWED_PROXIES trusts the forwarding header of every {' and '.join(claimed)} "
            "address, so any client can claim any address: failed logins and connections "
            "would be counted per claimed address, and a new claim is a new budget for "
            "guessing passwords: list only your proxies"
        )
    if mode is AuthMode.REQUIRED:
        return
    if open_hosts := everything_in(hosts):
        settings.problem(
            f"ALLOWED_HOSTS lets every {' and '.join(open_hosts)} address in "
            f"without a password (BASIC_AUTH={mode.value}): list the networks your clients "
            "use, or set BASIC_AUTH=required"
        )
    elif hosts and claimed:
        settings.problem(
            f"ALLOWED_PROXIES trusts the forwarding header of every "
            f"{' and '.join(claimed)} address, so any client can claim an "
            f"allowed host and get in without a password (BASIC_AUTH={mode.value}): list only "
            "your proxies"
        )


def _domains(settings: Settings) -> tuple[str, ...]:
    domains: list[str] = []
    items = settings.items("DNSAPI_DOMAINS")
    for item in items:
        try:
            domains.append(normalize_name(item))
        except InvalidName as exc:
            settings.problem(f"DNSAPI_DOMAINS: {item!r} {exc}")
    # Only when nothing was given: a bad entry has been reported already, and a
    # missing setting must be reported alongside every other problem.
    if not items:
        settings.problem("DNSAPI_DOMAINS is required: the domains this gateway may change")
    return tuple(dict.fromkeys(domains))


def _delegations(settings: Settings) -> tuple[tuple[str, str], ...]:
    """``DELEGATIONS=example.com=x.validation.example.net, ...``."""
    pairs: list[tuple[str, str]] = []
    for item in settings.items("DELEGATIONS"):
        name, sep, target = item.partition("=")
        try:
            if not sep:
                raise InvalidName("must be NAME=TARGET")
            pairs.append((normalize_name(name), normalize_name(target)))
        except InvalidName as exc:
            settings.problem(f"DELEGATIONS: {item!r} {exc}")
    targets = [t for _, t in pairs]
    if len(set(targets)) != len(targets):
        settings.problem("DELEGATIONS: a target may belong to one name only")
    return tuple(pairs)


def _acmedns(settings: Settings) -> AcmeDnsConfig:
    zone = settings.zone("ACMEDNS_ZONE" if settings.has("ACMEDNS_ZONE") else "BUILTIN_ZONE")
    register = settings.boolean("ACMEDNS_REGISTER", False)
    if register and zone is None:
        settings.problem(
            "ACMEDNS_REGISTER=1 needs ACMEDNS_ZONE (or BUILTIN_ZONE): the zone where "
            "registered accounts' names are created"
        )
    accounts = settings.get("ACMEDNS_ACCOUNTS_FILE")
    if accounts and not Path(accounts).is_file():
        settings.problem(f"ACMEDNS_ACCOUNTS_FILE: {accounts} does not exist")
    return AcmeDnsConfig(
        register=register,
        zone=zone,
        keep=settings.integer("ACMEDNS_KEEP", 2, 2, 100),
        accounts_file=Path(accounts) if accounts else None,
    )


def _tls_acme(settings: Settings, managed: tuple[str, ...]) -> AcmeTLSConfig | None:
    """``SSL_ACME_*``, each name checked to be one the gateway may write the challenge of."""
    server = settings.get("SSL_ACME_SERVER")
    others = [k for k in ("SSL_ACME_DOMAINS", "SSL_ACME_EMAIL", "SSL_ACME_CA_FILE",
                          "SSL_ACME_RETRY_DELAY", "SSL_ACME_EAB_KID") if settings.has(k)]
    eab_key = settings.secret("SSL_ACME_EAB_HMAC_KEY")
    if eab_key is not None:
        others.append("SSL_ACME_EAB_HMAC_KEY")
    if server is None:
        if others:
            settings.problem(f"{', '.join(others)} without SSL_ACME_SERVER: set the ACME "
                             "directory URL the gateway should get its own certificate from")
        return None
    for key in ("SSL_CERT", "SSL_KEY"):
        if settings.has(key):
            settings.problem(f"{key} and SSL_ACME_SERVER exclude each other: the gateway either "
                             "serves the files you give it or keeps its own certificate")
    try:
        url = directory_url(server)
    except UsageError:
        settings.problem(f"SSL_ACME_SERVER={server!r} is neither an https:// directory URL "
                         "nor a known CA (letsencrypt, letsencrypt-staging, buypass, zerossl, "
                         "google)")
        url = server
    domains: list[str] = []
    for item in settings.items("SSL_ACME_DOMAINS"):
        try:
            name = dns_identifier(item)
        except UsageError as exc:
            settings.problem(f"SSL_ACME_DOMAINS: {exc}")
            continue
        if not any(is_within(challenge_name(name.removeprefix("*.")), d) for d in managed):
            settings.problem(f"SSL_ACME_DOMAINS: {item} lies outside DNSAPI_DOMAINS "
                             f"({', '.join(managed) or 'none'}): the gateway could not publish "
                             "its challenge")
        domains.append(name)
    if not settings.has("SSL_ACME_DOMAINS"):
        settings.problem("SSL_ACME_DOMAINS is required with SSL_ACME_SERVER: the host names "
                         "clients reach the gateway by")
    email = settings.get("SSL_ACME_EMAIL")
    if email is not None:
        email = email.removeprefix("mailto:")
        if "@" not in email or any(c in email for c in " ,<>"):
            settings.problem(f"SSL_ACME_EMAIL={email!r} is not an e-mail address")
    ca_file = settings.get("SSL_ACME_CA_FILE")
    if ca_file is not None and not Path(ca_file).is_file():
        settings.problem(f"SSL_ACME_CA_FILE: {ca_file} does not exist")
    eab_kid = settings.get("SSL_ACME_EAB_KID")
    if (eab_kid is None) != (eab_key is None):
        settings.problem("SSL_ACME_EAB_KID and SSL_ACME_EAB_HMAC_KEY go together: external "
                         "account binding needs the key id and the MAC key from the CA's console")
    elif eab_key is not None and not _BASE64URL.fullmatch(eab_key.strip()):
        # Never the value itself in the message: it is a secret.
        settings.problem("SSL_ACME_EAB_HMAC_KEY is not base64url (copy it from the CA's console)")
    return AcmeTLSConfig(
        server=url,
        domains=tuple(dict.fromkeys(domains)),
        email=email,
        ca_file=Path(ca_file) if ca_file else None,
        retry_delay=settings.duration("SSL_ACME_RETRY_DELAY", 120.0, 1.0, 3600.0),
        eab_kid=eab_kid,
        eab_hmac_key=eab_key.strip() if eab_key else None,
    )


_BASE64URL = re.compile(r"[A-Za-z0-9_+/-]+=*")  # used with fullmatch


def _tls(settings: Settings, config_dir: Path | None) -> TLSFiles | None:
    cert, key = settings.get("SSL_CERT"), settings.get("SSL_KEY")
    if cert and key:
        for name, path in (("SSL_CERT", cert), ("SSL_KEY", key)):
            if not Path(path).is_file():
                settings.problem(f"{name}: {path} does not exist")
        return TLSFiles(Path(cert), Path(key))
    if cert or key:
        settings.problem("SSL_CERT and SSL_KEY must be set together")
        return None
    # The original defaulted to cert.pem/key.pem next to itself; honour that
    # layout when both files sit next to the dotenv file.
    if config_dir is not None:
        c, k = config_dir / "cert.pem", config_dir / "key.pem"
        if c.is_file() and k.is_file():
            return TLSFiles(c, k)
    return None


def _passwd_file(settings: Settings, mode: AuthMode, config_dir: Path | None) -> Path | None:
    explicit = settings.get("PASSWD_FILE")
    if explicit:
        path = Path(explicit)
        if mode is not AuthMode.OFF and not path.is_file():
            settings.problem(f"PASSWD_FILE: {path} does not exist (create it with acmegw-passwd)")
        return path
    if mode is AuthMode.OFF:
        return None
    for folder in (config_dir, Path.cwd()):
        if folder is not None and (folder / DEFAULT_USERS_FILE).is_file():
            return folder / DEFAULT_USERS_FILE
    settings.problem(
        f"BASIC_AUTH={mode.value} needs a password file: set PASSWD_FILE "
        "(create it with acmegw-passwd USER)"
    )
    return None


def build(settings: Settings, args: argparse.Namespace, config_dir: Path | None) -> Config:
    """Turn merged settings into a :class:`Config`; problems go to ``settings.problems``."""
    listeners = _listeners(settings)
    managed_domains = _domains(settings)
    state_dir = Path(settings.get("STATE_DIR") or "state")
    tls_acme = _tls_acme(settings, managed_domains)
    tls = acme_files(state_dir) if tls_acme is not None else _tls(settings, config_dir)
    mode = settings.choice("BASIC_AUTH", _AUTH_WORDS, AuthMode.OFF)
    hosts = _networks(settings, "ALLOWED_HOSTS")
    proxies = _networks(settings, "ALLOWED_PROXIES")
    header = settings.get("PROXY_XFF")
    if header is None or header.lower() in ("1", "yes", "true", "on"):
        header = "X-Forwarded-For"
    if not proxies:
        header = None  # nobody is trusted to set it
    auth = AuthConfig(
        mode=mode,
        allowed_hosts=hosts,
        allowed_proxies=proxies,
        proxy_header=header,
        passwd_file=_passwd_file(settings, mode, config_dir),
        cache_ttl=settings.duration("AUTH_CACHE_TTL", 60.0, 0.0, 3600.0),
        max_failures=settings.integer("AUTH_MAX_FAILURES", 10, 1, 100000),
        failure_window=settings.duration("AUTH_FAILURE_WINDOW", 60.0, 1.0, 86400.0),
        queue_size=settings.integer("AUTH_QUEUE_SIZE", 64, 1, 100000),
        queue_wait=settings.duration("AUTH_QUEUE_WAIT", 5.0, 0.01, 600.0),
    )
    _open_to_all(settings, mode, hosts, proxies)
    # A bad entry has been reported already: this is for hosts not given at all.
    if mode is AuthMode.OFF and not hosts and not settings.has("ALLOWED_HOSTS"):
        settings.problem(
            "no authentication: set ALLOWED_HOSTS, or BASIC_AUTH=sufficient|required "
            "with a PASSWD_FILE (or both)"
        )
    insecure = settings.boolean("INSECURE_HTTP", False)
    if tls is None and mode is not AuthMode.OFF and not insecure:
        exposed = [str(lst) for lst in listeners if not lst.is_loopback]
        if exposed:
            settings.problem(
                f"passwords would cross the network in plaintext on {', '.join(exposed)}: set "
                "SSL_CERT and SSL_KEY (or SSL_ACME_SERVER), listen on loopback only, or set "
                "INSECURE_HTTP=1 behind a TLS-terminating proxy"
            )
    max_age = settings.duration("RECORD_MAX_AGE", 3600.0, 60.0, 30 * 86400.0)
    propagation = PropagationConfig(
        check=settings.choice(
            "PROPAGATION_CHECK", {"authoritative": True, "off": False, "none": False}, True
        ),
        wait=PropagationSettings.from_settings(settings),
    )
    acmedns = _acmedns(settings)
    log_level = (settings.get("LOG_LEVEL") or "INFO").upper()
    if log_level not in ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"):
        settings.problem(f"LOG_LEVEL={log_level!r} is not DEBUG, INFO, WARNING or ERROR")
        log_level = "INFO"
    return Config(
        listeners=listeners,
        tls=tls,
        tls_reload_interval=settings.duration("TLS_RELOAD_INTERVAL", 60.0, 0.1, 86400.0),
        insecure_http=insecure,
        auth=auth,
        managed_domains=managed_domains,
        state_dir=state_dir,
        record_max_age=max_age,
        janitor_interval=settings.duration(
            "JANITOR_INTERVAL", min(60.0, max_age / 4), 0.05, 86400.0
        ),
        propagation=propagation,
        provider_timeout=settings.duration("PROVIDER_TIMEOUT", 30.0, 0.1, 600.0),
        max_body=settings.integer("MAX_BODY", 8192, 256, 1 << 20),
        log_level=log_level,
        log_format=settings.choice("LOG_FORMAT", {"text": "text", "json": "json"}, "text"),
        config_dir=config_dir,
        check_only=bool(args.check_config),
        check_delegation=getattr(args, "check_delegation", None),
        delegations=_delegations(settings),
        httpreq_prefix=_prefix(settings),
        acmedns=acmedns,
        max_records_per_user=_max_records(settings, acmedns),
        connections=_connection_limits(settings),
        tls_acme=tls_acme,
        database=database_config(settings),
    )


def _connection_limits(settings: Settings) -> ConnectionLimits:
    return ConnectionLimits(
        header_timeout=settings.duration("HTTP_HEADER_TIMEOUT", 10.0, 0.1, 300.0),
        body_timeout=settings.duration("HTTP_BODY_TIMEOUT", 10.0, 0.1, 300.0),
        idle_timeout=settings.duration("HTTP_IDLE_TIMEOUT", 30.0, 0.1, 3600.0),
        max_connections=settings.integer("MAX_CONNECTIONS", 1024, 1, 1_000_000),
        max_per_client=settings.integer("MAX_CONNECTIONS_PER_CLIENT", 32, 1, 1_000_000),
    )


def database_config(settings: Settings) -> DatabaseConfig | None:
    """``DATABASE_URL`` (or ``DATABASE_URL_FILE``), its password taken out of it."""
    url = settings.secret("DATABASE_URL")
    password = settings.secret("DATABASE_PASSWORD")
    pool_size = settings.integer("DATABASE_POOL_SIZE", 20, 2, 1000)
    timeout = settings.duration("DATABASE_TIMEOUT", 10.0, 0.1, 600.0)
    if url is None:
        if password is not None:
            settings.problem("DATABASE_PASSWORD is set but DATABASE_URL is not")
        return None
    try:
        url, in_url = split_password(url)
    except ValueError as exc:
        settings.problem(f"DATABASE_URL: {exc}")
        return None
    if in_url is not None and password is not None:
        settings.problem("DATABASE_URL holds a password and DATABASE_PASSWORD is set; keep one")
    return DatabaseConfig(
        url=url,
        password=password if password is not None else in_url,
        pool_size=pool_size,
        timeout=timeout,
    )


def split_password(url: str) -> tuple[str, str | None]:
    """``postgresql://user:secret@host/db`` -> (``postgresql://user@host/db``, ``secret``).

    A password in the query (``?password=``) is taken out too; ValueError for
    anything but a ``postgresql://`` (or ``postgres://``) URL. Nothing else is
    checked here: libpq judges the rest when it connects.

    The user information is read as libpq reads it: up to the first ``@`` before
    any ``/``. A ``?`` or ``#`` in a password that is not percent-encoded is
    libpq's password all the same (and connects), where a URL parser would end the
    host there and leave the password in the URL that the log and errors show.
    """
    scheme, separator, rest = url.strip().partition("://")
    scheme = scheme.lower()
    if not separator or scheme not in ("postgresql", "postgres"):
        raise ValueError("expected postgresql://user@host:port/database")
    password = None
    end = next((i for i, char in enumerate(rest) if char in "@/"), len(rest))
    if rest[end:end + 1] == "@" and "@" in rest[end + 1:].partition("/")[0]:
        # libpq ends the password at the first "@", and would take the rest of it for
        # the host (which errors show); earlier versions here took the last one.
        raise ValueError("more than one '@' before the database: write an '@' in the "
                         "password as %40")
    userinfo = None
    if rest[end:end + 1] == "@":
        userinfo, rest = rest[:end], rest[end + 1:]
        user, colon, secret = userinfo.partition(":")
        if colon:
            password = urllib.parse.unquote(secret) or None
            userinfo = user
    elif "@" in rest.partition("?")[0]:
        # libpq would take the user and password for a host and port: the URL is
        # wrong, and showing it would show the password.
        raise ValueError("'@' after a '/': write a '/' in the password as %2F")
    # No fragment: libpq has none, and a "#" in ?password= is part of the password.
    parts = urllib.parse.urlsplit(f"{scheme}://{rest}", allow_fragments=False)
    query = urllib.parse.parse_qsl(parts.query, keep_blank_values=True)
    for key, value in query:
        if key == "password":
            password = value or None
    kept = urllib.parse.urlencode(
        [(k, v) for k, v in query if k != "password"], quote_via=urllib.parse.quote
    )
    netloc = parts.netloc if userinfo is None else f"{userinfo}@{parts.netloc}"
    # Not urlunsplit: it drops the "//" of an empty host (postgresql:///db, a local socket).
    return f"{scheme}://{netloc}{parts.path}" + (f"?{kept}" if kept else ""), password


def _max_records(settings: Settings, acmedns: AcmeDnsConfig) -> int:
    cap = settings.integer("MAX_RECORDS_PER_USER", 1000, 0, 10_000_000)
    if 0 < cap <= acmedns.keep:
        # An acme-dns account adds its new value before the oldest ones go.
        settings.problem(
            f"MAX_RECORDS_PER_USER={cap} leaves acme-dns accounts no room to update: "
            f"use 0 (no cap) or more than ACMEDNS_KEEP ({acmedns.keep})"
        )
    return cap


def _prefix(settings: Settings) -> str:
    prefix = (settings.get("HTTPREQ_PREFIX") or "").strip("/")
    if prefix and not all(
        part.replace("-", "").replace("_", "").replace(".", "").isalnum()
        for part in prefix.split("/")
    ):
        settings.problem(f"HTTPREQ_PREFIX={prefix!r}: use letters, digits, '-', '_' and '/'")
        return ""
    return f"/{prefix}" if prefix else ""


def load(argv: Sequence[str] | None, environ: Mapping[str, str]) -> tuple[Config, Settings]:
    """Read every source; raise :class:`ConfigError` listing all problems."""
    settings, args, config_dir = gather(argv, environ)
    config = build(settings, args, config_dir)
    if settings.problems:
        raise ConfigError(settings.problems)
    return config, settings
