"""The gateway's configuration: sources, precedence, every setting's forms and refusals.

Configurations are built with :func:`gateway.config.load` (or
:func:`gateway.server.prepare` where the provider matters) from an explicit
environment dict, in ``tmp_path`` so no ``.env`` or ``acmepasswd`` of the
checkout is picked up.
"""

from __future__ import annotations

import datetime
import ipaddress
from collections.abc import Mapping, Sequence
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from gateway import server
from gateway.config import AuthMode, Config, Listener, load
from lib.passwd import PasswordFile
from lib.settings import ConfigError, Settings

# The least a configuration needs: names to manage and some authentication.
BASE = {"DNSAPI_DOMAINS": "example.com", "ALLOWED_HOSTS": "127.0.0.1"}


@pytest.fixture(autouse=True)
def in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    return tmp_path


def ok(argv: Sequence[str] = (), env: Mapping[str, str] | None = None) -> tuple[Config, Settings]:
    try:
        return load(list(argv), dict(BASE if env is None else env))
    except ConfigError as exc:
        raise AssertionError(f"unexpected problems: {exc.problems}") from None


def problems(argv: Sequence[str] = (), env: Mapping[str, str] | None = None) -> list[str]:
    with pytest.raises(ConfigError) as info:
        load(list(argv), dict(BASE if env is None else env))
    assert info.value.problems, "a ConfigError must list its problems"
    return info.value.problems


def one_problem(argv: Sequence[str] = (), env: Mapping[str, str] | None = None) -> str:
    found = problems(argv, env)
    assert len(found) == 1, found
    return found[0]


def passwd_file(path: Path) -> Path:
    PasswordFile(path).set_user("alice", "correct horse")
    return path


# --- dotenv file --------------------------------------------------------------------------


DOTENV_TEXT = """\

# The original gateway's dotenv, as users write them.
   # an indented comment
dnsapi_domains = 'Example.COM, example.org'
Allowed_Hosts="10.0.0.0/8 192.0.2.7"
LOG_FORMAT=json   # a trailing comment
DNSAPI_USERNAME=
DNSAPI_PASSWORD="p#ss w0rd 'quoted'"
DNSAPI_CLASS='My Class'

LISTEN = 127.0.0.1:9000
"""


def test_dotenv_syntax_blank_lines_comments_quotes_empty_values_and_spaces(in_tmp: Path) -> None:
    (in_tmp / ".env").write_text(DOTENV_TEXT)
    config, settings = ok(env={})
    assert config.managed_domains == ("example.com", "example.org")
    assert config.auth.allowed_hosts == (
        ipaddress.ip_network("10.0.0.0/8"),
        ipaddress.ip_network("192.0.2.7/32"),
    )
    assert config.log_format == "json"
    assert config.listeners == (Listener("127.0.0.1", 9000),)
    # A '#' inside double quotes is part of the value; single quotes keep spaces.
    assert settings.secret("DNSAPI_PASSWORD") == "p#ss w0rd 'quoted'"
    assert settings.get("DNSAPI_CLASS") == "My Class"
    # "KEY=" is an empty value, which counts as unset.
    assert settings.get("DNSAPI_USERNAME") is None
    assert config.config_dir == in_tmp.resolve()


def test_dotenv_keys_are_case_insensitive(in_tmp: Path) -> None:
    (in_tmp / ".env").write_text("dnsapi_domains=lower.example\nAllowed_Hosts=192.0.2.1\n")
    config, _ = ok(env={})
    assert config.managed_domains == ("lower.example",)
    assert config.auth.allowed_hosts == (ipaddress.ip_network("192.0.2.1/32"),)


def test_no_dotenv_file_is_fine_and_then_nothing_comes_from_one(in_tmp: Path) -> None:
    config, _ = ok()
    assert config.config_dir is None


def test_explicit_dotenv_with_e_and_dotenv_variable(in_tmp: Path) -> None:
    (in_tmp / ".env").write_text("DNSAPI_DOMAINS=default.example\nALLOWED_HOSTS=127.0.0.1\n")
    conf = in_tmp / "conf"
    conf.mkdir()
    (conf / "a.env").write_text("DNSAPI_DOMAINS=a.example\nALLOWED_HOSTS=127.0.0.1\n")
    (conf / "b.env").write_text("DNSAPI_DOMAINS=b.example\nALLOWED_HOSTS=127.0.0.1\n")

    assert ok([], {})[0].managed_domains == ("default.example",)
    config, _ = ok(["-e", str(conf / "a.env")], {})
    assert config.managed_domains == ("a.example",)
    assert config.config_dir == conf.resolve()
    assert ok(["--dotenv", "conf/a.env"], {})[0].managed_domains == ("a.example",)
    assert ok([], {"DOTENV": str(conf / "b.env")})[0].managed_domains == ("b.example",)
    # The command line beats the environment for the file too.
    assert ok(["-e", str(conf / "a.env")], {"DOTENV": str(conf / "b.env")})[0].managed_domains == (
        "a.example",
    )


@pytest.mark.parametrize("how", ["cli", "env"])
def test_a_missing_explicit_dotenv_file_is_a_problem(in_tmp: Path, how: str) -> None:
    missing = in_tmp / "nope.env"
    argv = ["-e", str(missing)] if how == "cli" else []
    env = {**BASE, **({"DOTENV": str(missing)} if how == "env" else {})}
    assert any(str(missing) in p and "does not exist" in p for p in problems(argv, env))


def test_acmepasswd_next_to_the_dotenv_file_is_found(in_tmp: Path) -> None:
    conf = in_tmp / "etc"
    conf.mkdir()
    passwd_file(conf / "acmepasswd")
    (conf / "gw.env").write_text(
        "DNSAPI_DOMAINS=example.com\nBASIC_AUTH=sufficient\nLISTEN=127.0.0.1\n"
    )
    config, _ = ok(["-e", str(conf / "gw.env")], {})
    assert config.auth.passwd_file == conf.resolve() / "acmepasswd"


# --- precedence: command line > environment > dotenv ---------------------------------------


def test_listen_precedence(in_tmp: Path) -> None:
    (in_tmp / ".env").write_text("LISTEN=127.0.0.1:1001\n")
    assert ok([], BASE)[0].listeners == (Listener("127.0.0.1", 1001),)
    env = {**BASE, "LISTEN": "127.0.0.1:1002"}
    assert ok([], env)[0].listeners == (Listener("127.0.0.1", 1002),)
    assert ok(["-l", "127.0.0.1:1003"], env)[0].listeners == (Listener("127.0.0.1", 1003),)
    assert ok(["--listen", "127.0.0.1:1004"], env)[0].listeners == (Listener("127.0.0.1", 1004),)


def test_provider_module_and_class_precedence(in_tmp: Path) -> None:
    (in_tmp / ".env").write_text("DNSAPI_MODULE=dotenv_mod\nDNSAPI_CLASS=DotenvClass\n")
    _, s = ok([], BASE)
    assert (s.get("DNSAPI_MODULE"), s.get("DNSAPI_CLASS")) == ("dotenv_mod", "DotenvClass")
    env = {**BASE, "DNSAPI_MODULE": "env_mod", "DNSAPI_CLASS": "EnvClass"}
    _, s = ok([], env)
    assert (s.get("DNSAPI_MODULE"), s.get("DNSAPI_CLASS")) == ("env_mod", "EnvClass")
    _, s = ok(["-m", "cli_mod", "-c", "CliClass"], env)
    assert (s.get("DNSAPI_MODULE"), s.get("DNSAPI_CLASS")) == ("cli_mod", "CliClass")
    _, s = ok(["--dnsapi_module", "cli_mod"], env)  # each one separately
    assert (s.get("DNSAPI_MODULE"), s.get("DNSAPI_CLASS")) == ("cli_mod", "EnvClass")


def test_tls_file_precedence(in_tmp: Path) -> None:
    for name in ("c1", "k1", "c2", "k2", "c3", "k3"):
        (in_tmp / name).write_text("pem")
    (in_tmp / ".env").write_text("SSL_CERT=c1\nSSL_KEY=k1\n")
    tls = ok([], BASE)[0].tls
    assert tls is not None and (tls.cert, tls.key) == (Path("c1"), Path("k1"))
    env = {**BASE, "SSL_CERT": "c2", "SSL_KEY": "k2"}
    tls = ok([], env)[0].tls
    assert tls is not None and (tls.cert, tls.key) == (Path("c2"), Path("k2"))
    tls = ok(["--ssl_cert", "c3", "--ssl_key", "k3"], env)[0].tls
    assert tls is not None and (tls.cert, tls.key) == (Path("c3"), Path("k3"))


def test_environment_beats_dotenv_for_any_setting(in_tmp: Path) -> None:
    (in_tmp / ".env").write_text("DNSAPI_DOMAINS=dotenv.example\nLOG_LEVEL=debug\n")
    config, _ = ok([], {**BASE, "DNSAPI_DOMAINS": "env.example"})
    assert config.managed_domains == ("env.example",)
    assert config.log_level == "DEBUG"  # not overridden: the dotenv still counts


def test_tls_needs_both_files_and_they_must_exist(in_tmp: Path) -> None:
    (in_tmp / "cert.pem").write_text("pem")
    assert "together" in one_problem(["--ssl_cert", "cert.pem"])
    found = one_problem(["--ssl_cert", "cert.pem", "--ssl_key", "missing-key.pem"])
    assert "SSL_KEY" in found and "missing-key.pem" in found


# --- LISTEN ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("8000", Listener(None, 8000)),
        ("9100", Listener(None, 9100)),
        ("127.0.0.1", Listener("127.0.0.1", 8000)),
        ("127.0.0.1:9000", Listener("127.0.0.1", 9000)),
        ("[::1]:9000", Listener("::1", 9000)),
        ("[::1]", Listener("::1", 8000)),
        ("::1", Listener("::1", 8000)),
        ("2001:DB8::1", Listener("2001:db8::1", 8000)),
        ("*:8000", Listener(None, 8000)),
        ("*", Listener(None, 8000)),
        ("localhost:8080", Listener("localhost", 8080)),
    ],
)
def test_listen_forms(spec: str, expected: Listener) -> None:
    assert ok([], {**BASE, "LISTEN": spec})[0].listeners == (expected,)
    assert ok(["-l", spec], BASE)[0].listeners == (expected,)


def test_default_listener_is_every_interface_on_8000() -> None:
    assert ok()[0].listeners == (Listener(None, 8000),)


def test_several_listeners_comma_separated_and_repeated() -> None:
    want = (Listener("127.0.0.1", 9001), Listener("::1", 9002), Listener(None, 9003))
    assert ok([], {**BASE, "LISTEN": "127.0.0.1:9001, [::1]:9002,9003"})[0].listeners == want
    argv = ["-l", "127.0.0.1:9001", "-l", "[::1]:9002", "--listen", "9003"]
    assert ok(argv, BASE)[0].listeners == want
    assert ok(["-l", "127.0.0.1:9001,[::1]:9002", "-l", "9003"], BASE)[0].listeners == want
    # The same address twice is one listener.
    assert ok(["-l", "127.0.0.1:9001", "-l", "127.0.0.1:9001"], BASE)[0].listeners == want[:1]


def test_listen_ip_and_listen_port() -> None:
    env = {**BASE, "LISTEN_IP": "127.0.0.2", "LISTEN_PORT": "9005"}
    assert ok([], env)[0].listeners == (Listener("127.0.0.2", 9005),)
    assert ok([], {**BASE, "LISTEN_PORT": "9006"})[0].listeners == (Listener(None, 9006),)
    assert ok([], {**BASE, "LISTEN_IP": "::1"})[0].listeners == (Listener("::1", 8000),)
    # LISTEN_IP and LISTEN_PORT fill in what a LISTEN entry leaves out.
    env = {**env, "LISTEN": "9007, 127.0.0.3"}
    assert ok([], env)[0].listeners == (Listener("127.0.0.2", 9007), Listener("127.0.0.3", 9005))


@pytest.mark.parametrize(
    "spec",
    [
        "127.0.0.1:http",
        "999.1.1.1",
        "[::1",
        "[::1]9000",
        "127.0.0.1:-1",
        "127.0.0.1:70000",
        "gateway.example.com:80",
    ],
)
def test_bad_listen_is_a_problem_naming_it(spec: str) -> None:
    found = one_problem([], {**BASE, "LISTEN": spec})
    assert found.startswith("LISTEN"), found


def test_bad_listen_port_is_a_problem() -> None:
    assert "LISTEN_PORT" in one_problem([], {**BASE, "LISTEN_PORT": "65536"})
    assert "LISTEN_PORT" in one_problem([], {**BASE, "LISTEN_PORT": "eighty"})


# --- ALLOWED_HOSTS, ALLOWED_PROXIES, PROXY_XFF --------------------------------------------


def test_allowed_hosts_addresses_and_networks() -> None:
    env = {**BASE, "ALLOWED_HOSTS": "192.0.2.1, 2001:db8::1 10.0.0.0/8,2001:DB8:1::/48"}
    hosts = ok([], env)[0].auth.allowed_hosts
    assert hosts == tuple(
        ipaddress.ip_network(n)
        for n in ("192.0.2.1/32", "2001:db8::1/128", "10.0.0.0/8", "2001:db8:1::/48")
    )
    assert ipaddress.ip_address("10.200.0.1") in hosts[2]
    assert ipaddress.ip_address("192.0.2.2") not in hosts[0]


@pytest.mark.parametrize(
    "bad",
    ["300.1.1.1", "10.0.0.0/33", "gateway.example.com", "2001:db8::/129", "10.1.2.3/8",
     "192.0.2.10/0", "2001:db8::1/64"],
)
@pytest.mark.parametrize("key", ["ALLOWED_HOSTS", "ALLOWED_PROXIES"])
def test_bad_network_entries_are_problems(key: str, bad: str) -> None:
    found = one_problem([], {**BASE, key: f"127.0.0.1, {bad}"})
    assert found.startswith(key) and bad in found


def test_host_bits_are_not_widened_but_explained() -> None:
    found = one_problem([], {**BASE, "ALLOWED_HOSTS": "192.0.2.10/0"})
    assert "host bits" in found
    assert "192.0.2.10 for that address" in found and "0.0.0.0/0 for the whole" in found


@pytest.mark.parametrize(
    "hosts", ["0.0.0.0/0", "::/0", "0.0.0.0/1, 128.0.0.0/1", "::ffff:0:0/96", "10.0.0.0/8, ::/0"]
)
@pytest.mark.parametrize("mode", ["off", "sufficient"])
def test_every_address_without_a_password_is_refused(
    mode: str, hosts: str, tmp_path: Path
) -> None:
    env = {**BASE, "BASIC_AUTH": mode, "ALLOWED_HOSTS": hosts,
           "PASSWD_FILE": str(passwd_file(tmp_path / "acmepasswd")), "LISTEN": "127.0.0.1"}
    found = one_problem([], env)
    assert found.startswith("ALLOWED_HOSTS lets every") and f"BASIC_AUTH={mode}" in found


def test_every_address_with_a_password_is_allowed(tmp_path: Path) -> None:
    env = {**BASE, "BASIC_AUTH": "required", "ALLOWED_HOSTS": "0.0.0.0/0, ::/0",
           "PASSWD_FILE": str(passwd_file(tmp_path / "acmepasswd")), "LISTEN": "127.0.0.1"}
    assert len(ok([], env)[0].auth.allowed_hosts) == 2


@pytest.mark.parametrize("mode", ["off", "sufficient"])
def test_trusting_every_proxy_without_a_password_is_refused(mode: str, tmp_path: Path) -> None:
    env = {**BASE, "BASIC_AUTH": mode, "ALLOWED_HOSTS": "10.0.0.0/8",
           "ALLOWED_PROXIES": "0.0.0.0/0", "PASSWD_FILE": str(passwd_file(tmp_path / "pw")),
           "LISTEN": "127.0.0.1"}
    assert one_problem([], env).startswith("ALLOWED_PROXIES trusts the forwarding header")


def test_proxy_header_only_with_trusted_proxies() -> None:
    assert ok([], {**BASE, "PROXY_XFF": "X-Forwarded-For"})[0].auth.proxy_header is None
    auth = ok([], {**BASE, "ALLOWED_PROXIES": "10.0.0.1"})[0].auth
    assert auth.proxy_header == "X-Forwarded-For"
    assert auth.allowed_proxies == (ipaddress.ip_network("10.0.0.1/32"),)
    env = {**BASE, "ALLOWED_PROXIES": "10.0.0.1", "PROXY_XFF": "X-Real-IP"}
    assert ok([], env)[0].auth.proxy_header == "X-Real-IP"


# --- BASIC_AUTH and the insecure combinations ---------------------------------------------


@pytest.mark.parametrize(
    ("word", "mode"),
    [
        ("Sufficient", AuthMode.SUFFICIENT),
        ("sufficient", AuthMode.SUFFICIENT),
        ("REQUIRED", AuthMode.REQUIRED),
        ("Required", AuthMode.REQUIRED),
        ("none", AuthMode.OFF),
        ("disabled", AuthMode.OFF),
        ("Off", AuthMode.OFF),
        ("", AuthMode.OFF),
    ],
)
def test_basic_auth_is_case_insensitive(in_tmp: Path, word: str, mode: AuthMode) -> None:
    passwd_file(in_tmp / "users")
    env = {**BASE, "BASIC_AUTH": word, "PASSWD_FILE": "users", "LISTEN": "127.0.0.1"}
    assert ok([], env)[0].auth.mode is mode


def test_unknown_basic_auth_word_is_a_problem(in_tmp: Path) -> None:
    found = one_problem([], {**BASE, "BASIC_AUTH": "maybe"})
    assert "BASIC_AUTH" in found and "sufficient" in found and "required" in found


@pytest.mark.parametrize("mode", ["sufficient", "required"])
def test_password_modes_need_a_password_file(in_tmp: Path, mode: str) -> None:
    env = {"DNSAPI_DOMAINS": "example.com", "BASIC_AUTH": mode, "LISTEN": "127.0.0.1"}
    found = one_problem([], env)
    assert "PASSWD_FILE" in found and mode in found
    found = one_problem([], {**env, "PASSWD_FILE": "missing"})
    assert "PASSWD_FILE" in found and "missing" in found and "does not exist" in found
    # The original's default name in the working directory is found.
    passwd_file(in_tmp / "acmepasswd")
    assert ok([], env)[0].auth.passwd_file == in_tmp / "acmepasswd"


def test_sufficient_without_hosts_still_loads_as_password_only(in_tmp: Path) -> None:
    passwd_file(in_tmp / "users")
    env = {
        "DNSAPI_DOMAINS": "example.com",
        "BASIC_AUTH": "sufficient",
        "PASSWD_FILE": "users",
        "LISTEN": "127.0.0.1",
    }
    auth = ok([], env)[0].auth
    assert auth.mode is AuthMode.SUFFICIENT and auth.allowed_hosts == ()


@pytest.mark.parametrize("basic_auth", [None, "off", "none", "disabled", ""])
def test_no_authentication_at_all_is_refused(basic_auth: str | None) -> None:
    env = {"DNSAPI_DOMAINS": "example.com", "LISTEN": "127.0.0.1"}
    if basic_auth is not None:
        env["BASIC_AUTH"] = basic_auth
    assert "no authentication" in one_problem([], env)


@pytest.mark.parametrize(
    "listen", ["8000", "*:8000", "0.0.0.0:8000", "192.0.2.10", "[::]:8000", "[2001:db8::5]:443"]
)
def test_passwords_over_plaintext_on_a_public_listener_are_refused(
    in_tmp: Path, listen: str
) -> None:
    passwd_file(in_tmp / "acmepasswd")
    env = {"DNSAPI_DOMAINS": "example.com", "BASIC_AUTH": "sufficient", "LISTEN": listen}
    found = one_problem([], env)
    assert "plaintext" in found and "INSECURE_HTTP" in found
    config, _ = ok([], {**env, "INSECURE_HTTP": "1"})
    assert config.insecure_http is True


def test_the_plaintext_refusal_names_only_the_public_listeners(in_tmp: Path) -> None:
    passwd_file(in_tmp / "acmepasswd")
    env = {
        "DNSAPI_DOMAINS": "example.com",
        "BASIC_AUTH": "required",
        "LISTEN": "127.0.0.1:8001,192.0.2.10:8002",
    }
    found = one_problem([], env)
    assert "192.0.2.10:8002" in found and "127.0.0.1" not in found


@pytest.mark.parametrize(
    "listen", ["127.0.0.1", "127.0.0.5:9000", "[::1]:9000", "::1", "localhost"]
)
def test_passwords_over_plaintext_on_loopback_are_allowed(in_tmp: Path, listen: str) -> None:
    passwd_file(in_tmp / "acmepasswd")
    env = {"DNSAPI_DOMAINS": "example.com", "BASIC_AUTH": "sufficient", "LISTEN": listen}
    assert ok([], env)[0].insecure_http is False


def test_public_listener_is_fine_with_tls_or_without_passwords(in_tmp: Path) -> None:
    passwd_file(in_tmp / "acmepasswd")
    (in_tmp / "c.pem").write_text("pem")
    (in_tmp / "k.pem").write_text("pem")
    env = {
        "DNSAPI_DOMAINS": "example.com",
        "BASIC_AUTH": "sufficient",
        "LISTEN": "8000",
        "SSL_CERT": "c.pem",
        "SSL_KEY": "k.pem",
    }
    assert ok([], env)[0].tls is not None
    # Host allowlist only: no password crosses the network.
    assert ok([], {**BASE, "LISTEN": "0.0.0.0:8000"})[0].auth.mode is AuthMode.OFF


def test_insecure_http_must_be_a_boolean() -> None:
    assert "INSECURE_HTTP" in one_problem([], {**BASE, "INSECURE_HTTP": "perhaps"})


# --- secrets from files -------------------------------------------------------------------


def test_key_file_for_secrets(in_tmp: Path) -> None:
    (in_tmp / "secret").write_text("s3cret with spaces \n")
    _, s = ok([], {**BASE, "DNSAPI_PASSWORD_FILE": "secret"})
    assert s.secret("DNSAPI_PASSWORD") == "s3cret with spaces "  # only the newline goes
    _, s = ok([], {**BASE, "DNSAPI_PASSWORD_FILE": "secret", "DNSAPI_PASSWORD": "direct"})
    assert s.secret("DNSAPI_PASSWORD") is None
    assert any("DNSAPI_PASSWORD_FILE" in p and "both" in p for p in s.problems)
    _, s = ok([], {**BASE, "DNSAPI_PASSWORD_FILE": "absent"})
    assert s.secret("DNSAPI_PASSWORD") is None
    assert any("absent" in p for p in s.problems)


# --- names, durations, choices ------------------------------------------------------------


def test_managed_domains_are_normalised() -> None:
    env = {**BASE, "DNSAPI_DOMAINS": "Example.COM., *.Shop.Example.org bücher.example,example.com"}
    assert ok([], env)[0].managed_domains == (
        "example.com",
        "shop.example.org",
        "xn--bcher-kva.example",
    )


@pytest.mark.parametrize(
    "bad", ["exa_mple..com", "foo.*.example.com", "-bad-.example", "a" * 64 + ".example"]
)
def test_bad_managed_domains_are_problems(bad: str) -> None:
    found = one_problem([], {**BASE, "DNSAPI_DOMAINS": f"example.com,{bad}"})
    assert found.startswith("DNSAPI_DOMAINS")


def test_managed_domains_are_required() -> None:
    found = one_problem([], {"ALLOWED_HOSTS": "127.0.0.1"})
    assert "DNSAPI_DOMAINS" in found and "required" in found


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("90", 90.0),
        ("90s", 90.0),
        ("2m", 120.0),
        ("1.5h", 5400.0),
        ("1d", 86400.0),
        ("2 H", 7200.0),
    ],
)
def test_record_max_age_durations(text: str, seconds: float) -> None:
    config = ok([], {**BASE, "RECORD_MAX_AGE": text})[0]
    assert config.record_max_age == seconds
    # The janitor looks at least four times per max age (and at least once a minute).
    assert config.janitor_interval == min(60.0, seconds / 4)


def test_duration_defaults() -> None:
    config = ok()[0]
    assert config.record_max_age == 3600.0
    assert config.propagation.check is True
    assert config.propagation.timeout == 120.0
    assert config.propagation.nameservers == ()
    assert config.log_format == "text" and config.log_level == "INFO"


@pytest.mark.parametrize(
    ("key", "bad"),
    [
        ("RECORD_MAX_AGE", "30s"),
        ("RECORD_MAX_AGE", "forever"),
        ("RECORD_MAX_AGE", "-5"),
        ("PROPAGATION_TIMEOUT", "0"),
        ("PROPAGATION_TIMEOUT", "soon"),
        ("JANITOR_INTERVAL", "1w"),
        ("PROVIDER_TIMEOUT", "1h"),
    ],
)
def test_bad_durations_are_problems(key: str, bad: str) -> None:
    found = one_problem([], {**BASE, key: bad})
    assert found.startswith(key) and bad in found


def test_propagation_settings() -> None:
    env = {
        **BASE,
        "PROPAGATION_CHECK": "OFF",
        "PROPAGATION_TIMEOUT": "5m",
        "PROPAGATION_NAMESERVERS": "192.0.2.53, 192.0.2.54:5353 [2001:db8::53]:53,2001:db8::54",
    }
    propagation = ok([], env)[0].propagation
    assert propagation.check is False
    assert propagation.timeout == 300.0
    assert propagation.nameservers == (
        "192.0.2.53",
        "192.0.2.54:5353",
        "[2001:db8::53]:53",
        "2001:db8::54",
    )
    # A server to poll is an address: no lookup may stand between us and its answer.
    found = one_problem([], {**BASE, "PROPAGATION_NAMESERVERS": "192.0.2.53 ns1.example.net"})
    assert found.startswith("PROPAGATION_NAMESERVERS") and "ns1.example.net" in found
    assert ok([], {**BASE, "PROPAGATION_CHECK": "Authoritative"})[0].propagation.check is True
    found = one_problem([], {**BASE, "PROPAGATION_CHECK": "sometimes"})
    assert found.startswith("PROPAGATION_CHECK") and "authoritative" in found


@pytest.mark.parametrize(("word", "fmt"), [("json", "json"), ("JSON", "json"), ("text", "text")])
def test_log_format_choices(word: str, fmt: str) -> None:
    assert ok([], {**BASE, "LOG_FORMAT": word})[0].log_format == fmt


def test_bad_log_settings_are_problems() -> None:
    found = one_problem([], {**BASE, "LOG_FORMAT": "xml"})
    assert "LOG_FORMAT" in found and "json" in found and "text" in found
    assert "LOG_LEVEL" in one_problem([], {**BASE, "LOG_LEVEL": "loud"})
    assert ok([], {**BASE, "LOG_LEVEL": "debug"})[0].log_level == "DEBUG"


# --- every problem at once ----------------------------------------------------------------


BROKEN = {
    "LISTEN": "127.0.0.1:http",
    "ALLOWED_HOSTS": "10.0.0.300",
    "BASIC_AUTH": "maybe",
    "RECORD_MAX_AGE": "forever",
    "LOG_FORMAT": "xml",
    "PROPAGATION_CHECK": "sometimes",
}


def test_every_problem_is_listed_in_one_error() -> None:
    found = problems([], BROKEN)
    for key in [*BROKEN, "DNSAPI_DOMAINS"]:
        assert sum(p.startswith(key) or f" {key}" in p for p in found) >= 1, (key, found)
    assert len(found) >= len(BROKEN) + 1


def test_main_exits_2_and_prints_every_problem(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    for key in (
        "DNSAPI_DOMAINS",
        "PROVIDER",
        "DNSAPI_MODULE",
        "DNSAPI_CLASS",
        "DOTENV",
        "PASSWD_FILE",
        "SSL_CERT",
        "SSL_KEY",
        "LISTEN_IP",
        "LISTEN_PORT",
    ):
        monkeypatch.delenv(key, raising=False)
    for key, value in {**BROKEN, "PROVIDER": "no-such-dns"}.items():
        monkeypatch.setenv(key, value)
    assert server.main([]) == 2
    out, err = capsys.readouterr()
    assert out == ""
    for text in [*BROKEN.values(), "DNSAPI_DOMAINS", "no-such-dns"]:
        assert text in err, (text, err)
    listed = [line for line in err.splitlines() if line.startswith("  - ")]
    assert len(listed) >= len(BROKEN) + 2
    assert f"{len(listed)} problem(s)" in err


def test_argument_errors_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        server.main(["--no-such-option"])
    assert info.value.code == 2
    assert "--no-such-option" in capsys.readouterr().err


# --- choosing the provider ----------------------------------------------------------------


def prepare_problems(env: Mapping[str, str]) -> list[str]:
    with pytest.raises(ConfigError) as info:
        server.prepare([], env)
    return info.value.problems


def test_known_provider_loads() -> None:
    _, provider, _, _ = server.prepare([], {**BASE, "PROVIDER": "Memory"})
    assert provider.name == "memory"


def test_unknown_provider_lists_the_known_ones() -> None:
    (found,) = prepare_problems({**BASE, "PROVIDER": "route66"})
    assert "route66" in found
    for known in ("memory", "rfc2136", "powerdns", "builtin"):
        assert known in found


def test_provider_and_dnsapi_module_together_is_a_problem() -> None:
    env = {**BASE, "PROVIDER": "memory", "DNSAPI_MODULE": "mydns", "DNSAPI_CLASS": "MyDNS"}
    (found,) = prepare_problems(env)
    assert "PROVIDER" in found and "DNSAPI_MODULE" in found


def test_no_provider_at_all_is_a_problem() -> None:
    (found,) = prepare_problems(BASE)
    assert "PROVIDER" in found and "DNSAPI_MODULE" in found


def test_provider_problems_come_with_the_other_problems() -> None:
    found = prepare_problems(
        {
            "ALLOWED_HOSTS": "127.0.0.1",
            "LOG_FORMAT": "xml",
            "DNSAPI_MODULE": "no_such_module_here",
            "DNSAPI_CLASS": "X",
        }
    )
    assert any("LOG_FORMAT" in p for p in found)
    assert any("DNSAPI_DOMAINS" in p for p in found)
    assert any("no_such_module_here" in p for p in found)


# --- moving over from the original gateway ------------------------------------------------


def self_signed_pair(folder: Path) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "gateway.example.com")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(7)
        .not_valid_before(now)
        .not_valid_after(now + datetime.timedelta(days=1))
        .sign(key, hashes.SHA256())
    )
    (folder / "cert.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (folder / "key.pem").write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )


ORIGINAL_DOTENV = """\
# An installation of the original gateway: keys in any case, blanks around '='.
DNSAPI_USERNAME = apiuser
dnsapi_password="a long and complex passphrase"
DNSAPI_MODULE = providers.openprovider
DNSAPI_CLASS = OpenProvider
DNSAPI_DOMAINS = example.com, sub.example.net

BASIC_AUTH = sufficient
ALLOWED_HOSTS = 127.0.0.1, 192.168.24.0/24
ALLOWED_PROXIES = 192.168.24.2, 192.168.24.80
PROXY_XFF = X-Forwarded-For
"""


def test_an_original_installation_starts_unchanged(
    in_tmp: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    install = in_tmp / "opt" / "acmegw"
    install.mkdir(parents=True)
    (install / ".env").write_text(ORIGINAL_DOTENV)
    # The original kept acmepasswd, cert.pem and key.pem next to its .env.
    (install / "acmepasswd").write_text(f"alice:$8${'A' * 22}${'B' * 43}\n")
    self_signed_pair(install)
    elsewhere = in_tmp / "somewhere-else"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)

    # Files with secrets that others may read are the one thing that must change: the
    # refusal names each and the chmod that fixes it.
    with pytest.raises(ConfigError) as info:
        server.prepare(["-e", str(install / ".env")], {})
    fixes = [p.rpartition("run `")[2].rstrip("`") for p in info.value.problems]
    assert sorted(f.rpartition(" ")[2] for f in fixes) == sorted(
        str(install / name) for name in (".env", "acmepasswd", "key.pem")
    )
    for fix in fixes:
        mode, path = fix.removeprefix("chmod ").split(" ")
        Path(path).chmod(int(mode, 8))

    config, provider, passwords, tls = server.prepare(["-e", str(install / ".env")], {})
    assert provider.name == "openprovider"
    assert config.managed_domains == ("example.com", "sub.example.net")
    assert config.tls is not None and config.tls.cert == install.resolve() / "cert.pem"
    assert tls is not None
    assert config.listeners == (Listener(None, 8000),)  # public, but over TLS
    assert config.auth.mode is AuthMode.SUFFICIENT
    assert config.auth.passwd_file == install.resolve() / "acmepasswd"
    assert passwords is not None
    assert config.auth.proxy_header == "X-Forwarded-For"
    assert len(config.auth.allowed_proxies) == 2


def test_dotenv_values_are_not_interpolated(in_tmp: Path) -> None:
    (in_tmp / ".env").write_text(
        "DNSAPI_DOMAINS=example.com\nALLOWED_HOSTS=127.0.0.1\n"
        "DNSAPI_PASSWORD=pa$HOME${USER}ss\nDNSAPI_USERNAME='$USER'\n"
    )
    _, settings = ok([], {"HOME": "/root", "USER": "root"})
    assert settings.secret("DNSAPI_PASSWORD") == "pa$HOME${USER}ss"
    assert settings.get("DNSAPI_USERNAME") == "$USER"
