"""contrib/prometheus: the rules pass promtool, and every name they use is one a gateway exports.

``promtool check rules`` and ``promtool test rules`` (Debian ``prometheus``)
run on the shipped files. Then a real gateway (``python -m gateway``: HTTPS
with a certificate in the last fifth of its lifetime, basic auth, the builtin
DNS provider on a free port) serves a setup and refuses a wrong password, and
a second one keeps its own certificate (``SSL_ACME_SERVER``) from a CA that is
not there, so its renewal fails. Between them their ``/metrics`` must contain
every ``acmegw_*`` sample name, label and label value that the rules and their
tests match on. So renaming a metric breaks this test instead of silently
disarming an alert. The first gateway's log must also say that its certificate
expires soon; the second one's failure counter must count its failed try.
"""

from __future__ import annotations

import re
import subprocess
import time
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests
from cryptography import x509
from prometheus_client.parser import text_string_to_metric_families

from gateway.config import acme_files
from lib.passwd import PasswordFile
from tests.conftest import make_value
from tests.gateway.procs import REPO_ROOT, GatewayProcess, running_gateway
from tests.gateway.test_tls_expiry import days
from tests.servers.certs import make_tls_files
from tests.system import free_port, need_program

RULES_DIR = REPO_ROOT / "contrib" / "prometheus"
RULES = RULES_DIR / "acmegw-rules.yml"
RULE_TESTS = RULES_DIR / "acmegw-rules.test.yml"
USER, PASSWORD = "monitor", "prometheus-scrape-password"
WWW, WWW_PASSWORD = "www1", "www1-password"
# Labels that Prometheus adds when it scrapes, not the gateway.
SCRAPE_LABELS = {"job", "instance"}

pytestmark = pytest.mark.system


def promtool(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [need_program("promtool", "prometheus"), *args],
        cwd=RULES_DIR,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_the_rules_pass_promtool_check() -> None:
    done = promtool("check", "rules", RULES.name)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SUCCESS" in done.stdout


def test_the_rules_pass_their_unit_tests() -> None:
    done = promtool("test", "rules", RULE_TESTS.name)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SUCCESS" in done.stdout


def matchers(text: str) -> dict[str, set[tuple[str, str, str]]]:
    """Every ``acmegw_*`` sample name in *text*, with the (label, op, value) matchers on it."""
    found: dict[str, set[tuple[str, str, str]]] = {}
    for match in re.finditer(r"\b(acmegw_[a-z0-9_]+)(\{[^}]*\})?", text):
        name, braces = match.group(1), match.group(2) or ""
        labels = found.setdefault(name, set())
        for label, op, value in re.findall(r'(\w+)\s*(=~|!~|!=|=)\s*"([^"]*)"', braces):
            if label not in SCRAPE_LABELS:
                labels.add((label, op, value))
    return found


def test_matchers_finds_names_labels_and_values() -> None:
    text = 'x{a="b"} acmegw_a_total{result!="ok", job="gw"} / acmegw_b'
    assert matchers(text) == {"acmegw_a_total": {("result", "!=", "ok")}, "acmegw_b": set()}


@dataclass(frozen=True)
class Live:
    process: GatewayProcess
    url: str
    ca_file: Path
    cert_file: Path
    cert: x509.Certificate

    def get(self, path: str, auth: tuple[str, str] = (USER, PASSWORD)) -> requests.Response:
        return requests.get(self.url + path, auth=auth, verify=self.ca_file, timeout=30)

    def post(self, body: dict[str, str], auth: tuple[str, str]) -> requests.Response:
        return requests.post(self.url, json=body, auth=auth, verify=self.ca_file, timeout=30)


@pytest.fixture(scope="module")
def live_gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Live]:
    folder = tmp_path_factory.mktemp("gateway")
    # 100 days of lifetime, 10 left: the gateway should say so.
    files = make_tls_files(folder / "tls", valid=(days(-90), days(10)))
    cert = x509.load_pem_x509_certificate(files.cert.read_bytes())
    passwd = PasswordFile(folder / "acmepasswd")
    # The README's scrape user: its only domain is one nobody manages.
    passwd.set_user(USER, PASSWORD, domains=["metrics.invalid"])
    passwd.set_user(WWW, WWW_PASSWORD, domains=["example.test"])
    port, dns = free_port(), f"127.0.0.1:{free_port()}"
    settings = {
        "LISTEN": f"127.0.0.1:{port}",
        "SSL_CERT": str(files.cert),
        "SSL_KEY": str(files.key),
        "BASIC_AUTH": "required",
        "PASSWD_FILE": str(folder / "acmepasswd"),
        "PROVIDER": "builtin",
        "BUILTIN_LISTEN": dns,
        "BUILTIN_NS": "ns.gateway.invalid",
        "PROPAGATION_NAMESERVERS": dns,
        "DNSAPI_DOMAINS": "example.test",
        "STATE_DIR": str(folder / "state"),
    }
    with running_gateway(folder, settings) as gw:
        yield Live(gw, f"https://127.0.0.1:{port}/", files.ca, files.cert, cert)


@dataclass(frozen=True)
class AcmeLive:
    process: GatewayProcess
    url: str
    ca_file: Path

    def metrics(self) -> dict[str, list[tuple[dict[str, str], float]]]:
        scraped = requests.get(self.url + "metrics", verify=self.ca_file, timeout=30)
        assert scraped.status_code == 200, scraped.text
        return exported_samples(scraped.text)


@pytest.fixture(scope="module")
def acme_gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AcmeLive]:
    """A gateway on SSL_ACME_SERVER with nothing at that address: its certificate (in
    the state directory, as an earlier run left it) is due for renewal, which fails."""
    folder = tmp_path_factory.mktemp("acme-gateway")
    files = make_tls_files(folder / "tls", valid=(days(-90), days(10)))
    state = folder / "state"
    served = acme_files(state)
    served.cert.parent.mkdir(mode=0o700, parents=True)
    for path in (state, *served.cert.parents[:3]):
        path.chmod(0o700)
    served.cert.write_bytes(files.cert.read_bytes())
    served.key.touch(mode=0o600)
    served.key.write_bytes(files.key.read_bytes())
    port = free_port()
    settings = {
        "LISTEN": f"127.0.0.1:{port}",
        "ALLOWED_HOSTS": "127.0.0.1",
        "PROVIDER": "memory",
        "DNSAPI_DOMAINS": "example.test",
        "STATE_DIR": str(state),
        "SSL_ACME_SERVER": f"https://127.0.0.1:{free_port()}/dir",  # nothing there
        "SSL_ACME_DOMAINS": "gw.example.test",
        "SSL_ACME_RETRY_DELAY": "1h",
    }
    with running_gateway(folder, settings) as gw:
        yield AcmeLive(gw, f"https://127.0.0.1:{port}/", files.ca)


def exported_samples(text: str) -> dict[str, list[tuple[dict[str, str], float]]]:
    """Every sample in a /metrics page: name -> [(labels, value)]."""
    exported: dict[str, list[tuple[dict[str, str], float]]] = defaultdict(list)
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            exported[sample.name].append((sample.labels, sample.value))
    return exported


def test_a_failed_renewal_is_counted(acme_gateway: AcmeLive) -> None:
    gw = acme_gateway
    deadline = time.monotonic() + 60
    while not gw.metrics()["acmegw_tls_acme_failures_total"][0][1]:
        assert time.monotonic() < deadline, gw.process.stderr
        time.sleep(0.2)
    assert "not obtained from" in gw.process.stderr


def test_every_name_the_rules_use_is_exported_by_a_running_gateway(
    live_gateway: Live, acme_gateway: AcmeLive
) -> None:
    gw = live_gateway
    setup = {"argument": "setup", "domain_name": "example.test", "challenge_content": make_value()}
    done = gw.post(setup, (WWW, WWW_PASSWORD))
    assert done.status_code == 201, done.text
    # The scrape user can read the metrics and change nothing.
    done = gw.post(setup, (USER, PASSWORD))
    assert done.status_code == 403, done.text
    assert gw.get("metrics", auth=(USER, "wrong")).status_code == 401
    scraped = gw.get("metrics")
    assert scraped.status_code == 200

    exported: dict[str, list[dict[str, str]]] = defaultdict(list)
    for samples in (exported_samples(scraped.text), acme_gateway.metrics()):
        for name, found in samples.items():
            exported[name] += [labels for labels, _ in found]

    # Label values matter where the rules match on them; the tests' input
    # series must use real names and labels (their values are examples).
    checks = [(matchers(RULES.read_text()), True), (matchers(RULE_TESTS.read_text()), False)]
    assert "acmegw_tls_certificate_not_after_timestamp_seconds" in checks[0][0]
    assert "acmegw_tls_acme_failures_total" in checks[0][0]
    for wanted, check_values in checks:
        for name, found in sorted(wanted.items()):
            assert name in exported, f"the rules use {name}, which the gateway does not export"
            for label, op, value in found:
                values = {labels.get(label) for labels in exported[name]}
                assert values != {None}, f"{name} has no label {label!r}"
                if check_values and op in ("=", "!="):
                    assert value in values, f"{name}{{{label}{op}{value!r}}}: only {values}"


def test_the_certificate_gauges_and_log_tell_the_expiry(live_gateway: Live) -> None:
    gw = live_gateway
    families = {f.name: f for f in text_string_to_metric_families(gw.get("metrics").text)}
    not_after = families["acmegw_tls_certificate_not_after_timestamp_seconds"].samples[0].value
    not_before = families["acmegw_tls_certificate_not_before_timestamp_seconds"].samples[0].value
    assert not_after == gw.cert.not_valid_after_utc.timestamp()
    assert not_before == gw.cert.not_valid_before_utc.timestamp()
    expiring = rf"WARNING .*TLS certificate {re.escape(str(gw.cert_file))} expires in (9|10) days"
    assert re.search(expiring, gw.process.stderr), gw.process.stderr


def test_the_rules_are_what_the_readme_lists() -> None:
    readme = (REPO_ROOT / "contrib" / "prometheus" / "README.md").read_text()
    alerts = re.findall(r"^\s+- alert: (\w+)$", RULES.read_text(), re.MULTILINE)
    assert len(alerts) >= 8
    for alert in alerts:
        assert f"`{alert}`" in readme, f"contrib/prometheus/README.md does not describe {alert}"
