"""The acmegw-acme command line without any CA: usage errors, exit codes, the lock,
output formats, and secrets that must never be shown."""

from __future__ import annotations

import datetime
import io
import ipaddress
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from lib.acme.cli import main
from lib.acme.output import EXIT_BUSY, EXIT_OK, EXIT_USAGE
from lib.acme.progress import Progress
from lib.acme.store import Lineage, Store
from tests.gateway.procs import REPO_ROOT
from tests.system import free_port

SECRET = "c2VjcmV0LW1hYy1rZXktdGhhdC1tdXN0LW5ldmVyLXNob3c"


@pytest.fixture
def state(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    for key in ("PROVIDER", "DNSAPI_MODULE", "ACMEGW_ACME_STATE_DIR",
                "ACMEGW_GATEWAY_PASSWORD_FILE", "ACMEGW_EAB_HMAC_KEY"):
        monkeypatch.delenv(key, raising=False)
    return tmp_path / "state"


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    status = main(list(args))
    captured = capsys.readouterr()
    return status, captured.out, captured.err


def test_usage_errors_exit_2(state: Path, capsys: pytest.CaptureFixture[str]) -> None:
    base = ["--state-dir", str(state)]
    cases = {
        ("issue", *base): "-d/--domain",
        ("issue", "-d", "bad..name", *base): "-d 'bad..name'",
        ("issue", "-d", "example.test", "--server", "nowhere", *base): "known CA (letsencrypt",
        ("issue", "-d", "example.test", "--server", "http://ca.example/dir", *base):
            "neither an https URL",
        ("issue", "-d", "example.test", *base): "--gateway-url URL, or --provider NAME",
        ("issue", "-d", "example.test", "--gateway-url", "https://gw/", "--gateway-user", "u",
         *base): "--gateway-user needs --gateway-password-file",
        ("issue", "-d", "example.test", "--gateway-url", "https://gw/",
         "--propagation-nameservers", "ns1.example.test", *base): "is not an IP address",
        ("issue", "-d", "example.test", "--gateway-url", "https://gw/", "--eab-kid", "k",
         *base): "needs both --eab-kid and the MAC key",
        ("issue", "-d", "example.test", "--gateway-url", "https://gw/", "--eab-kid", "k",
         "--eab-hmac-key", "not base64!", *base): "not base64url",
        ("revoke", "--cert", "/nonexistent", *base): "cannot read /nonexistent",
        ("account", "deactivate", *base): "add --yes",
        ("renew", "--name", "../x", *base): "not a usable certificate name",
        ("frobnicate",): "invalid choice",
    }
    for argv, message in cases.items():
        status, out, err = run(capsys, *argv)
        assert status == EXIT_USAGE, (argv, err)
        assert message in err, (argv, err)
        assert out == ""


def test_a_bad_revocation_reason(state: Path, tmp_path: Path,
                                 capsys: pytest.CaptureFixture[str]) -> None:
    cert = tmp_path / "cert.pem"
    cert.write_text("not a certificate")
    status, _, err = run(capsys, "revoke", "--cert", str(cert), "--reason", "boredom",
                         "--state-dir", str(state))
    assert status == EXIT_USAGE and "not a revocation reason" in err
    status, _, err = run(capsys, "revoke", "--cert", str(cert), "--state-dir", str(state))
    assert status == EXIT_USAGE and "holds no PEM certificate" in err


def test_the_gateway_password_file_must_be_private(state: Path, tmp_path: Path,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    password = tmp_path / "pw"
    password.write_text("hunter2-gateway-password")
    password.chmod(0o640)
    argv = ["issue", "-d", "example.test", "--gateway-url", "https://gw/", "--gateway-user", "u",
            "--gateway-password-file", str(password), "--state-dir", str(state)]
    status, out, err = run(capsys, *argv)
    assert status == EXIT_USAGE
    assert f"{password} is readable by group or others; run: chmod 600 {password}" in err
    assert "hunter2" not in out + err
    password.write_text("")
    password.chmod(0o600)
    status, _, err = run(capsys, *argv)
    assert status == EXIT_USAGE and "is empty" in err


def test_the_eab_mac_key_is_never_echoed(state: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # argparse repeats unrecognised arguments, values included (list takes no EAB options).
    for argv, redacted in ((["list", "--eab-hmac-key", SECRET], True),
                           (["list", f"--eab-hmac-key={SECRET}"], True),
                           (["issue", "-d", "example.test", "--eab-kid", "k", "--eab-hmac-key",
                             SECRET, "--bogus-option"], False)):
        status, out, err = run(capsys, *argv, "--state-dir", str(state))
        assert status == EXIT_USAGE
        assert "unrecognized arguments" in err
        assert ("***" in err) == redacted, err
        assert SECRET not in out + err


def test_list_and_renew_with_nothing_to_do(state: Path, capsys: pytest.CaptureFixture[str]) -> None:
    status, out, _ = run(capsys, "list", "--state-dir", str(state))
    assert status == EXIT_OK and out == "no certificates\n"
    status, out, _ = run(capsys, "list", "--json", "--state-dir", str(state))
    assert status == EXIT_OK and json.loads(out) == {"certificates": [], "command": "list",
                                                     "ok": True, "steps": []}
    status, out, err = run(capsys, "renew", "--state-dir", str(state))
    assert status == EXIT_OK and out == "no certificates\n" and err == ""
    assert state.stat().st_mode & 0o777 == 0o700


def test_a_second_run_waits_then_gives_up_with_status_3(
        state: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with Store(state).locked():
        status, _, err = run(capsys, "renew", "--lock-timeout", "0.2", "--state-dir", str(state))
    assert status == EXIT_BUSY
    # The wait is said before it starts, with the process that holds the lock.
    assert f"waiting up to 0.2s for the acmegw-acme run that holds {state}/lock " \
           f"(pid {os.getpid()})" in err
    assert f"another acmegw-acme run (pid {os.getpid()}) holds" in err
    status, _, _ = run(capsys, "renew", "--lock-timeout", "0", "--state-dir", str(state))
    assert status == EXIT_OK


def test_runs_as_a_module_with_help(tmp_path: Path) -> None:
    done = subprocess.run([sys.executable, "-m", "lib.acme", "issue", "--help"], cwd=REPO_ROOT,
                          capture_output=True, text=True, timeout=30, check=False)
    assert done.returncode == 0, done.stderr
    for option in ("--gateway-password-file", "--preferred-chain", "--profile", "--eab-kid",
                   "--deploy-hook", "--propagation-nameservers", "--key-type"):
        assert option in done.stdout


@pytest.mark.parametrize(("option", "value", "command"), [
    ("--propagation-timeout", "-1", "issue"), ("--propagation-timeout", "0", "issue"),
    ("--propagation-timeout", "nan", "issue"), ("--timeout", "-5", "issue"),
    ("--timeout", "inf", "renew"), ("--attempts", "0", "renew"),
    ("--retry-delay", "-1", "renew"), ("--lock-timeout", "-1", "list"),
])
def test_numbers_out_of_range_are_usage_errors_with_the_subcommands_usage(
        state: Path, capsys: pytest.CaptureFixture[str], option: str, value: str,
        command: str) -> None:
    extra = ["-d", "example.test", "--gateway-url", "https://gw/"] if command == "issue" else []
    status, out, err = run(capsys, command, *extra, f"{option}={value}", "--state-dir",
                           str(state))
    assert status == EXIT_USAGE, err
    assert err.startswith(f"usage: acmegw-acme {command} "), err
    assert f"argument {option}" in err and "Traceback" not in err
    assert out == "" and not state.exists()


def _lineage_meta(store: Store, name: str, **changes: object) -> None:
    """A lineage issued long ago that is not due for years (no CA needed to decide),
    with its files: a self-signed certificate of serial 1f."""
    lineage = Lineage(name=name, domains=[name], servers=["https://ca.invalid/dir"],
                      serial="1f", not_before="2020-01-01T00:00:00Z",
                      not_after="2999-01-01T00:00:00Z",
                      solver={"kind": "gateway", "url": "https://gw.invalid/"})
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    cert = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject)
            .public_key(key.public_key()).serial_number(0x1f)
            .not_valid_before(datetime.datetime(2020, 1, 1, tzinfo=datetime.UTC))
            .not_valid_after(datetime.datetime(2999, 1, 1, tzinfo=datetime.UTC))
            .sign(key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM))
    store.save_certificate(lineage, {
        "privkey.pem": key.private_bytes(serialization.Encoding.PEM,
                                         serialization.PrivateFormat.PKCS8,
                                         serialization.NoEncryption()),
        "cert.pem": cert, "chain.pem": b"", "fullchain.pem": cert})
    if changes:
        meta = store.lineage_dir(name) / "meta.json"
        meta.write_text(json.dumps({**json.loads(meta.read_text()), **changes}))


def test_one_damaged_certificate_does_not_stop_renew_or_list(
        state: Path, capsys: pytest.CaptureFixture[str]) -> None:
    store = Store(state)
    _lineage_meta(store, "a.example.test")
    _lineage_meta(store, "b.example.test", propagation_timeout=-1)
    _lineage_meta(store, "c.example.test")
    (store.lineage_dir("c.example.test") / "meta.json").write_text("{not json")
    _lineage_meta(store, "d.example.test")

    status, out, err = run(capsys, "renew", "--json", "--state-dir", str(state))
    assert status == 1, err
    outcomes = {c["name"]: c for c in json.loads(out)["certificates"]}
    assert [outcomes[n]["action"] for n in sorted(outcomes)] == ["kept", "failed", "failed",
                                                                 "kept"]
    assert "propagation_timeout -1 is not 1 to 3600 seconds" in outcomes["b.example.test"]["error"]
    assert "meta.json" in outcomes["c.example.test"]["error"]
    assert "Traceback" not in err

    status, out, _ = run(capsys, "list", "--state-dir", str(state))
    assert status == 1
    lines = out.splitlines()
    assert [line.split(":")[0] for line in lines] == ["a.example.test", "b.example.test",
                                                      "c.example.test", "d.example.test"]
    assert lines[0].startswith("a.example.test: valid, until 2999-01-01")
    assert lines[2].startswith("c.example.test: unreadable: cannot read")


def test_json_reports_usage_errors_busy_runs_and_internal_errors(
        state: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    status, out, _ = run(capsys, "renew", "--json", "--bogus", "--state-dir", str(state))
    assert status == EXIT_USAGE
    doc = json.loads(out)
    assert doc["ok"] is False and doc["exit_status"] == 2 and doc["command"] == "renew"
    assert "--bogus" in doc["error"]

    with Store(state).locked():
        status, out, _ = run(capsys, "renew", "--json", "--lock-timeout", "0",
                             "--state-dir", str(state))
    assert status == EXIT_BUSY
    assert json.loads(out)["exit_status"] == 3

    def broken(*_: object) -> int:
        raise RuntimeError("a bug")

    monkeypatch.setattr("lib.acme.commands.list_certificates", broken)
    status, out, err = run(capsys, "list", "--json", "--state-dir", str(state))
    assert status == 1
    assert json.loads(out)["error"] == "internal error: RuntimeError: a bug"
    assert err == "acmegw-acme: internal error: RuntimeError: a bug (run with -v for the " \
                  "traceback)\n"


@pytest.mark.parametrize(("name", "why"), [
    ("127.0.0.1", "is an IP address"), ("::1", "is an IP address"),
    ("[2001:db8::1]", "is an IP address"),
    ("a_b.example.test", "the label 'a_b' is not letters"),
    ("_acme-challenge.example.test", "is not letters, digits and inner hyphens"),
    ("localhost", "at least two labels"), ("*.test", "at least two labels"),
    ("host.123", "top label is a number"),
    ("ab--cd.example.test", "is reserved"), ("bad..name", "has an empty label"),
    # 241 characters: a host name, but _acme-challenge.<it> is no DNS name (over 253).
    (".".join(["a" * 60] * 3 + ["b" * 45, "example.test"]),
     "its dns-01 record, _acme-challenge.<name>, would be longer than 253 characters"),
])
def test_names_no_certificate_can_hold_are_usage_errors_before_any_request(
        state: Path, capsys: pytest.CaptureFixture[str], name: str, why: str) -> None:
    # The CA and the gateway are unreachable addresses: exit 2 means nothing was sent.
    argv = ["issue", "-d", "example.test", "-d", name, "--server", "https://192.0.2.1:9/dir",
            "--gateway-url", "https://192.0.2.1:9/", "--state-dir", str(state),
            "--retry-delay", "0", "--attempts", "1", "--lock-timeout", "0"]
    status, out, err = run(capsys, *argv)
    assert status == EXIT_USAGE, err
    assert why in err and err.count("\n") == 1 and out == ""


def test_a_long_wait_says_that_it_goes_on() -> None:
    stream = io.StringIO()
    progress = Progress(stream)
    with progress.waiting("waiting for the DNS", every=0.01):
        while "still waiting" not in stream.getvalue():
            time.sleep(0.01)
    lines = stream.getvalue().splitlines()
    assert lines[0].endswith("] waiting for the DNS")
    assert "s): waiting for the DNS" in lines[1] and "still waiting (" in lines[1]


# A "$" anchor also matches before a final line break: a certificate name that ends in
# one made a folder of that name, and an output line that starts with what follows it.


def _acme(state: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """acmegw-acme as a process of its own, as cron or a systemd timer runs it."""
    return subprocess.run([sys.executable, "-m", "lib.acme", *args, "--state-dir", str(state)],
                          cwd=REPO_ROOT, capture_output=True, text=True, timeout=60,
                          check=False)


def test_a_certificate_name_ending_in_a_line_break_is_a_usage_error(state: Path) -> None:
    done = _acme(state, "renew", "--name", "www.example.test\n")
    assert done.returncode == EXIT_USAGE, done.stderr
    assert "'www.example.test\\n' is not a usable certificate name" in done.stderr
    assert done.stdout == ""


def test_a_stored_name_ending_in_a_line_break_is_damage(state: Path) -> None:
    store = Store(state)
    _lineage_meta(store, "a.example.test")
    meta = store.lineage_dir("a.example.test") / "meta.json"
    meta.write_text(json.dumps({**json.loads(meta.read_text()), "name": "a.example.test\n"}))
    done = _acme(state, "list")
    assert done.returncode == 1, done.stderr
    assert done.stdout.splitlines() == [
        "a.example.test: unreadable: certificate metadata: name 'a.example.test\\n' is not a "
        "usable certificate name"]


def test_a_damaged_renewal_window_is_reported_with_the_others(
        state: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A hand-edited ARI window failed list altogether (an internal error, no certificate
    listed) and renew with a ValueError: it is damage of that certificate's metadata."""
    store = Store(state)
    _lineage_meta(store, "a.example.test")
    _lineage_meta(store, "b.example.test", ari_window={"start": "soon", "end": "later"},
                  ari_chosen="2026-01-01T00:00:00Z")
    status, out, err = run(capsys, "list", "--state-dir", str(state))
    assert status == 1 and "internal error" not in err
    assert out.splitlines() == [
        "a.example.test: valid, until 2999-01-01T00:00:00Z, a.example.test, ec256, from None, "
        f"files in {state}/certificates/a.example.test",
        "b.example.test: unreadable: certificate metadata: ari_window start 'soon' is not a "
        "time; ari_window end 'later' is not a time"]
    status, out, err = run(capsys, "renew", "--json", "--state-dir", str(state))
    assert status == 1
    outcomes = {c["name"]: c for c in json.loads(out)["certificates"]}
    assert outcomes["a.example.test"]["action"] == "kept"
    assert "ari_window end 'later' is not a time" in outcomes["b.example.test"]["error"]


def test_a_deploy_hook_that_fails_again_says_so_in_every_output(
        state: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A certificate that is not due runs its pending deploy hook again; when that fails,
    --quiet (a timer) printed only "error: NAME: kept: ... days left", never the hook."""
    _lineage_meta(Store(state), "a.example.test", deploy_hook="echo cannot reload; exit 4",
                  deploy_pending=True)
    status, out, err = run(capsys, "renew", "--quiet", "--state-dir", str(state))
    assert status == 1 and out == ""
    assert "deploy hook exited with status 4: cannot reload" in err, err
    status, out, _ = run(capsys, "renew", "--state-dir", str(state))
    assert status == 1
    assert "kept" in out and "deploy hook exited with status 4: cannot reload" in out, out


@pytest.mark.parametrize(("command", "argv"), [
    ("renew", ["renew", "--bogus"]),
    ("issue", ["issue", "-d", "example.test", "--frobnicate", "x"]),
    ("account register", ["account", "register", "--bogus"]),
    ("list", ["list", "extra"]),
])
def test_an_unknown_option_shows_the_subcommands_usage(
        state: Path, capsys: pytest.CaptureFixture[str], command: str, argv: list[str]) -> None:
    status, out, err = run(capsys, *argv, "--state-dir", str(state))
    assert status == EXIT_USAGE and out == ""
    assert err.startswith(f"usage: acmegw-acme {command} "), err
    assert "unrecognized arguments" in err


@pytest.mark.parametrize(("entry", "why"), [
    ("ip", "asks for the IP address 192.0.2.7: dns-01 validates DNS names only"),
    ("email", "asks for the e-mail address web@example.test: dns-01 validates DNS names only"),
    ("uri", "asks for the URI https://example.test/: dns-01 validates DNS names only"),
])
def test_a_csr_asking_for_more_than_dns_names_is_a_usage_error_before_any_request(
        state: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], entry: str,
        why: str) -> None:
    """A CSR with an IP address beside its DNS names passed the checks, was ordered and
    validated (TXT values published), and then refused at finalize."""
    extra = {"ip": x509.IPAddress(ipaddress.ip_address("192.0.2.7")),
             "email": x509.RFC822Name("web@example.test"),
             "uri": x509.UniformResourceIdentifier("https://example.test/")}[entry]
    key = ec.generate_private_key(ec.SECP256R1())
    csr = (x509.CertificateSigningRequestBuilder()
           .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "example.test")]))
           .add_extension(x509.SubjectAlternativeName([x509.DNSName("example.test"), extra]),
                          critical=False)
           .sign(key, hashes.SHA256()))
    csr_file = tmp_path / "request.csr"
    csr_file.write_bytes(csr.public_bytes(serialization.Encoding.PEM))
    status, out, err = run(capsys, "issue", "--csr", str(csr_file), "--server",
                           "https://192.0.2.1:9/dir", "--gateway-url", "https://192.0.2.1:9/",
                           "--state-dir", str(state), "--attempts", "1", "--lock-timeout", "0")
    assert status == EXIT_USAGE, err
    assert f"--csr {csr_file}: the CSR {why}" in err and out == ""


def test_a_damaged_list_of_published_values_does_not_stop_every_run(
        state: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """STATE/published.json is read before any certificate is worked on: a damaged one
    failed every issue and renew, for good. It is moved aside (for whoever wants to
    withdraw what it lists by hand), and the run goes on."""
    _lineage_meta(Store(state), "a.example.test")
    (state / "published.json").write_text('{"certificates": [')
    status, out, err = run(capsys, "renew", "--state-dir", str(state))
    assert status == EXIT_OK, err
    assert out.startswith("a.example.test: kept")
    aside = [p.name for p in state.iterdir() if p.name.startswith("published.json")]
    assert len(aside) == 1 and aside[0].startswith("published.json.damaged-"), aside
    assert f"cannot read {state}/published.json" in err and f"moved to {state}/{aside[0]}" in err
    status, _, err = run(capsys, "renew", "--state-dir", str(state))
    assert status == EXIT_OK and "published.json" not in err


def test_a_damaged_csr_in_the_metadata_is_found_when_it_is_loaded(
        state: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The CSR kept for renewals (--csr) was read only at finalize: a damaged one let
    every renewal order and validate, then fail, at every run."""
    _lineage_meta(Store(state), "a.example.test",
                  csr="-----BEGIN CERTIFICATE REQUEST-----\ndamaged\n"
                      "-----END CERTIFICATE REQUEST-----\n")
    status, out, _ = run(capsys, "list", "--state-dir", str(state))
    assert status == 1
    assert out == ("a.example.test: unreadable: certificate metadata: csr: not a "
                   "certificate signing request (PEM or DER)\n")


def _published(state: Path, *entries: tuple[str, dict[str, object], str]) -> None:
    """STATE/published.json listing one value per (certificate, solver, listed since)."""
    state.mkdir(parents=True, exist_ok=True)
    doc = {"certificates": [
        {"name": name, "domains": [name], "solver": solver, "propagation_nameservers": [],
         "since": since, "records": [{"domain": name, "value": "v" * 43}]}
        for name, solver, since in entries]}
    (state / "published.json").write_text(json.dumps(doc))


def test_values_that_can_never_be_withdrawn_are_not_tried_for_ever(
        state: Path, capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    """A value whose publishing was refused (a name the DNS server's policy does not
    grant) cannot be withdrawn either: it stayed listed, and every later run of every
    certificate tried again and warned that it was 'still published', for good."""
    refusing = {"kind": "provider", "provider": "memory",
                "settings": {"MEMORY_FAIL": "REFUSED by the server's policy"}}
    gateway = {"kind": "gateway", "url": f"http://127.0.0.1:{free_port()}/"}
    long_ago = "2020-01-01T00:00:00Z"
    now = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    _published(state, ("old.example.test", refusing, long_ago),
               ("new.example.test", refusing, now), ("gw.example.test", gateway, now))
    status, _, err = run(capsys, "renew", "--state-dir", str(state))
    assert status == EXIT_OK
    # Listed for more than a week: given up, with what to remove by hand.
    assert ("old.example.test: gave up withdrawing 1 TXT value(s) listed since "
            f"{long_ago}: remove by hand: _acme-challenge.old.example.test {'v' * 43}") in err
    # Through the gateway, its own journal and janitor take it over at once.
    assert "gw.example.test: 1 TXT value(s) could not be withdrawn through the gateway" in err
    assert "its janitor removes them" in err
    # A recent one is tried again by the next run.
    assert ("new.example.test: 1 TXT value(s) left by an earlier run could not be withdrawn: "
            "memory: ") in err and f"(each run tries again, for 7 days from {now})" in err
    left = json.loads((state / "published.json").read_text())["certificates"]
    assert [e["name"] for e in left] == ["new.example.test"]
