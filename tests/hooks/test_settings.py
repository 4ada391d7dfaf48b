"""Settings: hook.conf and environment (environment wins), aliases, secrets, refusals."""

from __future__ import annotations

import os
import re
import ssl
from pathlib import Path

import pytest

from hooks.acmegw_hook import SettingsError, load_settings
from hooks.transport import tls_context
from tests.hooks.conftest import call_sync, one_line
from tests.servers.certs import make_tls_files


def write(path: Path, text: str, mode: int = 0o600) -> Path:
    path.write_text(text)
    path.chmod(mode)
    return path


def test_conf_file_is_read_and_the_environment_wins(tmp_path: Path) -> None:
    conf = write(tmp_path / "hook.conf", "# a comment\n"
                 "acmegw_url = https://gw.example.net:8000/\n"
                 "ACMEGW_USER=alice\nACMEGW_PASSWORD='from file'\n"
                 "export ACMEGW_TIMEOUT=90\nACMEGW_LOG=\n")
    settings = load_settings({"ACMEGW_HOOK_CONF": str(conf)})
    assert settings.url == "https://gw.example.net:8000/"
    assert (settings.user, settings.password, settings.timeout) == ("alice", "from file", 90.0)
    assert settings.log_file is None
    settings = load_settings({"ACMEGW_HOOK_CONF": str(conf), "ACMEGW_USER": "bob",
                              "ACMEGW_PASSWORD": "from env", "ACMEGW_TIMEOUT": "2m"})
    assert (settings.user, settings.password, settings.timeout) == ("bob", "from env", 120.0)


def test_the_default_conf_is_used_when_present(no_default_conf: Path) -> None:
    write(no_default_conf, "ACMEGW_URL=http://127.0.0.1:8000/\n")
    assert load_settings({}).url == "http://127.0.0.1:8000/"


def test_the_original_hooks_names_are_aliases(tmp_path: Path) -> None:
    log = tmp_path / "hook.log"
    settings = load_settings({"API_URI": "https://gw.example.net/", "API_USER": "alice",
                              "API_PASSWD": "pw", "LOGFILE": str(log), "DNS_DELAY": "3"})
    assert (settings.url, settings.user, settings.password) == (
        "https://gw.example.net/", "alice", "pw")
    assert settings.log_file == str(log) and settings.dns_delay == 3.0
    # The new name wins over the alias in the same place.
    both = load_settings({"API_URI": "https://old.example.net/",
                          "ACMEGW_URL": "https://new.example.net/"})
    assert both.url == "https://new.example.net/"


def test_an_alias_in_the_environment_beats_the_file(tmp_path: Path) -> None:
    conf = write(tmp_path / "hook.conf", "ACMEGW_URL=https://file.example.net/\n")
    settings = load_settings({"ACMEGW_HOOK_CONF": str(conf), "API_URI": "https://env.example.net/"})
    assert settings.url == "https://env.example.net/"


def test_password_file_trailing_newline_is_dropped(tmp_path: Path) -> None:
    secret = write(tmp_path / "pw", "s3cret with spaces \n")
    settings = load_settings({"ACMEGW_URL": "https://gw.example.net/", "ACMEGW_USER": "alice",
                              "ACMEGW_PASSWORD_FILE": str(secret)})
    assert settings.password == "s3cret with spaces "


# A group the hook (this test's process) is not in; files get it with chown, as root.
FOREIGN_GID = 4242


@pytest.mark.parametrize(("mode", "gid"), [(0o604, None), (0o644, None), (0o640, FOREIGN_GID)])
def test_a_password_file_others_can_read_is_refused(tmp_path: Path, mode: int,
                                                    gid: int | None) -> None:
    secret = write(tmp_path / "pw", "s3cret\n", mode)
    if gid is not None:
        if os.geteuid() != 0:
            pytest.skip("giving a file a group one is not in takes root")
        os.chown(secret, -1, gid)
    env = {"ACMEGW_URL": "https://gw.example.net/", "ACMEGW_USER": "alice",
           "ACMEGW_PASSWORD_FILE": str(secret)}
    with pytest.raises(SettingsError, match=re.escape(f"chmod 600 {secret}")):
        load_settings(env)
    result = call_sync(["setup", "example.com", "A" * 43], env)
    assert result.status == 2
    line = one_line(result.stderr)
    assert line.startswith("acmegw-hook: ") and f"chmod 600 {secret}" in line
    assert "s3cret" not in line


def test_a_hook_conf_holding_a_password_others_can_read_is_refused(tmp_path: Path) -> None:
    conf = write(tmp_path / "hook.conf", "ACMEGW_URL=https://gw.example.net/\n"
                 "API_USER=alice\nAPI_PASSWD=s3cret\n", 0o644)
    with pytest.raises(SettingsError, match=re.escape(f"chmod 600 {conf}")) as caught:
        load_settings({"ACMEGW_HOOK_CONF": str(conf)})
    assert "s3cret" not in str(caught.value)
    # Without a password in it, a readable hook.conf is fine.
    write(conf, "ACMEGW_URL=https://gw.example.net/\n", 0o644)
    assert load_settings({"ACMEGW_HOOK_CONF": str(conf)}).password is None


def test_unreadable_and_missing_files_are_named(tmp_path: Path) -> None:
    with pytest.raises(SettingsError, match="does not exist"):
        load_settings({"ACMEGW_HOOK_CONF": str(tmp_path / "nope.conf")})
    with pytest.raises(SettingsError, match=r"cannot read .*nope"):
        load_settings({"ACMEGW_URL": "https://gw.example.net/", "ACMEGW_USER": "alice",
                       "ACMEGW_PASSWORD_FILE": str(tmp_path / "nope")})
    with pytest.raises(SettingsError, match="ACMEGW_CA_FILE: cannot read"):
        load_settings({"ACMEGW_URL": "https://gw.example.net/",
                       "ACMEGW_CA_FILE": str(tmp_path / "ca.pem")})
    write(tmp_path / "empty", "\n")
    with pytest.raises(SettingsError, match="is empty"):
        load_settings({"ACMEGW_URL": "https://gw.example.net/", "ACMEGW_USER": "alice",
                       "ACMEGW_PASSWORD_FILE": str(tmp_path / "empty")})


@pytest.mark.parametrize(("env", "message"), [
    ({}, "ACMEGW_URL is not set"),
    ({"ACMEGW_URL": "gw.example.net:8000"}, "not an http:// or https:// URL"),
    ({"ACMEGW_URL": "https://alice:s3cret@gw.example.net/"}, "holds a user name or password"),
    ({"ACMEGW_URL": "https://gw.example.net/a b"}, "spaces or control characters"),
    ({"ACMEGW_URL": "https://gw.example.net/\r\nX-Injected: 1"}, "control characters"),
    ({"ACMEGW_URL": "https://gw.example.net:99999/"}, "not a usable URL .*[Pp]ort"),
    ({"ACMEGW_URL": "https://[::1/"}, "not a usable URL"),
    ({"ACMEGW_URL": "https://gw.example.net/", "ACMEGW_USER": "alice"}, "has no password"),
    ({"ACMEGW_URL": "https://gw.example.net/", "ACMEGW_PASSWORD": "s3cret"},
     "ACMEGW_USER is not"),
    ({"ACMEGW_URL": "https://gw.example.net/", "ACMEGW_USER": "alice",
      "ACMEGW_PASSWORD": "s3cret", "ACMEGW_PASSWORD_FILE": "/x"}, "keep the file only"),
    ({"ACMEGW_URL": "http://gw.example.net/", "ACMEGW_USER": "alice",
      "ACMEGW_PASSWORD": "s3cret"}, "in plaintext"),
    ({"ACMEGW_URL": "https://gw.example.net/", "ACMEGW_TIMEOUT": "forever"},
     "not a duration"),
    ({"ACMEGW_URL": "https://gw.example.net/", "ACMEGW_TIMEOUT": "0"}, "out of range"),
    ({"ACMEGW_URL": "https://gw.example.net/", "ACMEGW_PROPAGATION_NAMESERVERS": "ns1.x"},
     "not an IP address"),
])
def test_unusable_settings_are_refused_with_the_fix(env: dict[str, str], message: str) -> None:
    with pytest.raises(SettingsError, match=message) as caught:
        load_settings(env)
    assert "s3cret" not in str(caught.value)


def test_plain_http_is_fine_on_loopback_or_with_an_explicit_opt_in() -> None:
    base = {"ACMEGW_USER": "alice", "ACMEGW_PASSWORD": "pw"}
    assert load_settings({**base, "ACMEGW_URL": "http://127.0.0.1:8000/"}).password == "pw"
    assert load_settings({**base, "ACMEGW_URL": "http://[::1]:8000/"}).password == "pw"
    assert load_settings({**base, "ACMEGW_URL": "http://gw.example.net/",
                          "ACMEGW_INSECURE_HTTP": "1"}).password == "pw"


def test_tls_verification_uses_the_ca_file_or_the_system_store(tmp_path: Path) -> None:
    files = make_tls_files(tmp_path / "tls")
    settings = load_settings({"ACMEGW_URL": "https://gw/", "ACMEGW_CA_FILE": str(files.ca)})
    assert settings.ca_file == str(files.ca)
    only = tls_context(settings.ca_file)
    assert only.cert_store_stats()["x509_ca"] == 1  # that CA and nothing else
    assert load_settings({"ACMEGW_URL": "https://gw/"}).ca_file is None
    system = tls_context(None)
    assert system.cert_store_stats()["x509_ca"] > 1  # Debian's ca-certificates
    for context in (only, system):  # never off
        assert context.verify_mode == ssl.CERT_REQUIRED and context.check_hostname


def test_propagation_settings() -> None:
    base = {"ACMEGW_URL": "https://gw/"}
    assert not load_settings(base).propagation_wait
    assert load_settings({**base, "ACMEGW_PROPAGATION_WAIT": "yes"}).propagation_wait
    listed = load_settings({**base, "ACMEGW_PROPAGATION_NAMESERVERS": "192.0.2.1, 127.0.0.1:53"})
    assert listed.propagation_wait
    assert listed.propagation_nameservers == ("192.0.2.1", "127.0.0.1:53")


def test_the_password_is_not_in_the_settings_repr() -> None:
    settings = load_settings({"ACMEGW_URL": "https://gw/", "ACMEGW_USER": "alice",
                              "ACMEGW_PASSWORD": "s3cret"})
    assert "s3cret" not in repr(settings)


def test_events_need_no_settings_at_all() -> None:
    # A MDMessageCmd or dehydrated event must not fail because the hook is not configured.
    for argv in (["renewed", "example.com"], ["generate_csr", "example.com", "c", "d"]):
        result = call_sync(argv, {})
        assert (result.status, result.stdout, result.stderr) == (0, "", "")



def test_a_line_the_parser_cannot_read_is_one_clear_line(tmp_path: Path) -> None:
    conf = write(tmp_path / "hook.conf", "ACMEGW_URL=https://gw/\nACMEGW_PASSWORD='it's'\n")
    result = call_sync(["setup", "example.com", "A" * 43], {"ACMEGW_HOOK_CONF": str(conf)})
    assert result.status == 2
    line = one_line(result.stderr)  # python-dotenv's own warning must not reach stderr
    assert f"{conf} line 2 cannot be parsed" in line and "it's" not in line


def test_a_password_in_hook_conf_is_taken_as_written(tmp_path: Path) -> None:
    conf = write(tmp_path / "hook.conf", "ACMEGW_URL=https://gw/\nACMEGW_USER=alice\n"
                 'ACMEGW_PASSWORD="pa${HOME}ss # not a comment"\n')
    assert load_settings({"ACMEGW_HOOK_CONF": str(conf)}).password == (
        "pa${HOME}ss # not a comment")
