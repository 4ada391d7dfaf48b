"""Issue 4, done when: Apache mod_md gets a wildcard certificate through acmegw-hook.

The whole chain with the real programs, each on loopback high ports:
Apache httpd (Debian ``apache2-bin``: mod_md, mod_ssl) → ``acmegw-hook`` (this
checkout, installed for Debian's python3 and run by mod_md as ``www-data``) →
the gateway (``python -m gateway``, HTTPS, basic auth, ``rfc2136``) → BIND (TSIG
updates) ← pebble (the ACME CA, validating for real through ``-dnsserver`` at that
BIND). mod_md must obtain a certificate for ``example.test`` and
``*.example.test``, and after a graceful restart the vhost must serve it.
Afterwards no TXT value is left in BIND nor in the gateway's journal.

The configuration Apache runs with is the one README.md documents
("Use with Apache mod_md"); :class:`tests.e2e_hook.rig.Apache` writes it.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.e2e import journal_rows
from tests.e2e_hook.rig import (
    GATEWAY_PASSWORD,
    Apache,
    apache_env,
    dig_txt,
    gateway_files,
    sans,
    start_gateway,
    write_hook_conf,
)
from tests.servers.bind import BindServer
from tests.servers.pebble import Pebble

pytestmark = pytest.mark.system

SETUP_DONE = r"AH10059: The Managed Domain example\.test has been setup"
ISSUE_TIMEOUT = 45.0
# mod_md's "processing failed, will retry": in a test that expects no failure, stop there.
FAILED = r"AH10056"

ApacheFactory = Callable[..., Apache]


@pytest.fixture
def apache_factory(tmp_path: Path, shared: Path, hook_program: Path,
                   pebble: Pebble) -> Iterator[ApacheFactory]:
    started: list[Apache] = []

    # mod_md's child reads the CA file as www-data: tmp_path is closed to it.
    pebble_ca = shared / "pebble-ca.pem"
    shutil.copy(pebble.ca_file, pebble_ca)
    pebble_ca.chmod(0o644)

    def make(hook_conf: Path, **options: object) -> Apache:
        apache = Apache(conf_dir=tmp_path / "apache", shared=shared, hook=hook_program,
                        pebble_url=pebble.url, pebble_ca=pebble_ca,
                        env=apache_env(hook_conf), **options)  # type: ignore[arg-type]
        apache.conf_dir.mkdir(exist_ok=True)
        started.append(apache)
        apache.start()
        return apache

    try:
        yield make
    finally:
        for apache in started:
            apache.stop()


def assert_nothing_left(bind: BindServer, state_dir: Path) -> None:
    assert dig_txt(bind.port) == set()
    assert journal_rows(state_dir) == []


def test_mod_md_gets_the_wildcard_certificate_and_serves_it(
    tmp_path: Path, shared: Path, bind: BindServer, pebble: Pebble, apache_factory: ApacheFactory,
) -> None:
    files = gateway_files(tmp_path / "gateway", shared, bind)
    gateway = start_gateway(files)
    try:
        hook_conf = write_hook_conf(shared, files.url, files.ca_file)
        started = time.monotonic()
        apache = apache_factory(hook_conf)
        apache.wait_for_log(SETUP_DONE, ISSUE_TIMEOUT, fail_on=FAILED)
        print(f"AH10059 after {time.monotonic() - started:.2f}s")
        apache.graceful()
        certificate = apache.served_certificate("www.example.test", pebble.root_pem())
        assert sans(certificate) == {"example.test", "*.example.test"}
        assert sans(apache.served_certificate("example.test", pebble.root_pem())) == {
            "example.test", "*.example.test"}
        hook_log = (shared / "hook.log").read_text()
        print(hook_log)
        # Both values were set (they had to coexist) and both were torn down by value.
        assert hook_log.count("mod_md setup example.test") == 2, hook_log
        assert hook_log.count("mod_md teardown example.test") == 2, hook_log
        assert "(value all)" not in hook_log
        # mod_md ran it as the httpd user, from the venv of Debian's python3.
        assert hook_log.count(") as www-data") == 4, hook_log
        # MDMessageCmd events reach the same program and are acknowledged.
        assert "event " in hook_log, hook_log
        assert "failed with exit code" not in apache.log()
        assert_nothing_left(bind, files.state_dir)
        assert gateway.proc.poll() is None
        assert "webserver" in gateway.stderr and "add" in gateway.stderr
    finally:
        gateway.stop()


def test_version_1_teardown_leaves_no_record(
    tmp_path: Path, shared: Path, bind: BindServer, pebble: Pebble, apache_factory: ApacheFactory,
) -> None:
    # MDChallengeDns01Version 1 tears down with the domain only: the gateway removes
    # every value this user set at that name, from its journal.
    files = gateway_files(tmp_path / "gateway", shared, bind)
    gateway = start_gateway(files)
    try:
        apache = apache_factory(write_hook_conf(shared, files.url, files.ca_file),
                                dns01_version=1, message_cmd=False)
        apache.wait_for_log(SETUP_DONE, ISSUE_TIMEOUT, fail_on=FAILED)
        hook_log = (shared / "hook.log").read_text()
        assert hook_log.count("mod_md setup example.test") == 2, hook_log
        # One teardown per authorization, each without a value.
        assert hook_log.count("mod_md teardown example.test (value all)") == 2, hook_log
        assert_nothing_left(bind, files.state_dir)
        apache.graceful()
        assert sans(apache.served_certificate("example.test", pebble.root_pem())) == {
            "example.test", "*.example.test"}
    finally:
        gateway.stop()


def test_the_gateway_down_at_first_then_the_certificate_comes(
    tmp_path: Path, shared: Path, bind: BindServer, pebble: Pebble, apache_factory: ApacheFactory,
) -> None:
    files = gateway_files(tmp_path / "gateway", shared, bind)
    # A short bound, so the first attempt gives up quickly and mod_md tries again.
    hook_conf = write_hook_conf(shared, files.url, files.ca_file, timeout="3")
    apache = apache_factory(hook_conf, message_cmd=False)
    failed = apache.wait_for_log(r"stderr: (acmegw-hook: setup example\.test: cannot reach [^\n]*)",
                                 ISSUE_TIMEOUT)
    line = failed.group(1)
    assert "connection refused" in line and "check that the gateway runs" in line, line
    assert GATEWAY_PASSWORD not in apache.log()
    assert dig_txt(bind.port) == set()
    gateway = start_gateway(files)
    try:
        apache.wait_for_log(SETUP_DONE, ISSUE_TIMEOUT)
        assert_nothing_left(bind, files.state_dir)
        apache.graceful()
        assert sans(apache.served_certificate("www.example.test", pebble.root_pem())) == {
            "example.test", "*.example.test"}
    finally:
        gateway.stop()
