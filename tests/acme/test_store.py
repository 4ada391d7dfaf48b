"""The state directory (atomic writes, modes, archives, the lock), renewal decisions,
and the small parsers of the network layer (Retry-After, Link, problem documents)."""

from __future__ import annotations

import datetime
import json
import os
import random
import subprocess
import sys
from pathlib import Path

import pytest
from requests.structures import CaseInsensitiveDict

from lib.acme.durable import atomic_write
from lib.acme.errors import LockBusy, UsageError
from lib.acme.messages import Directory, RenewalInfo, problem_from_json
from lib.acme.renewal import ari_check_due, by_lifetime, by_window, remember_window
from lib.acme.store import (
    Lineage,
    Store,
    StoredAccount,
    ca_folder_name,
    check_lineage_name,
    iso,
    lineage_name_for,
    parse_iso,
)
from lib.acme.transport import parse_links, parse_retry_after
from tests.gateway.procs import REPO_ROOT

NOW = datetime.datetime(2030, 1, 1, tzinfo=datetime.UTC)


def test_atomic_write_sets_the_mode_and_leaves_no_temporary_file(tmp_path: Path) -> None:
    old = os.umask(0o077)
    try:
        atomic_write(tmp_path / "cert.pem", b"one", 0o644)
    finally:
        os.umask(old)
    atomic_write(tmp_path / "privkey.pem", b"secret", 0o600)
    atomic_write(tmp_path / "privkey.pem", b"secret2", 0o600)
    assert (tmp_path / "cert.pem").stat().st_mode & 0o777 == 0o644
    assert (tmp_path / "privkey.pem").stat().st_mode & 0o777 == 0o600
    assert (tmp_path / "privkey.pem").read_bytes() == b"secret2"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cert.pem", "privkey.pem"]


def test_each_version_has_a_folder_and_the_names_follow_current(tmp_path: Path) -> None:
    store = Store(tmp_path / "state")
    lineage = Lineage(name="example.test", domains=["example.test"], servers=["https://ca/"])
    for n in range(3):
        files = {name: f"{name} v{n}".encode() for name in
                 ("privkey.pem", "cert.pem", "chain.pem", "fullchain.pem")}
        lineage.serial = f"{n:x}"
        store.save_certificate(lineage, files)
    folder = store.files_dir(lineage)
    assert (folder / "cert.pem").read_text() == "cert.pem v2"
    versions = store.versions(lineage)
    assert [(v / "cert.pem").read_text() for v in versions] == [f"cert.pem v{n}" for n in range(3)]
    assert [v.name.rsplit("-", 1)[1] for v in versions] == ["0", "1", "2"]
    assert os.readlink(folder / "current") == f"versions/{versions[-1].name}"
    for name in ("privkey.pem", "cert.pem", "chain.pem", "fullchain.pem"):
        assert os.readlink(folder / name) == f"current/{name}"
    assert all((v / "privkey.pem").stat().st_mode & 0o777 == 0o600 for v in versions)
    assert all((v / "cert.pem").stat().st_mode & 0o777 == 0o644 for v in versions)
    assert (store.root / "certificates").stat().st_mode & 0o777 == 0o700
    assert store.lineage_names() == ["example.test"]
    loaded = store.load_lineage("example.test")
    assert loaded == lineage


def test_out_folder_holds_the_files_and_the_state_keeps_the_metadata(tmp_path: Path) -> None:
    store = Store(tmp_path / "state")
    lineage = Lineage(name="example.test", domains=["example.test"], servers=["https://ca/"],
                      out=str(tmp_path / "nginx"))
    store.save_certificate(lineage, {"cert.pem": b"c", "fullchain.pem": b"c", "privkey.pem": b"k"})
    assert (tmp_path / "nginx" / "cert.pem").read_bytes() == b"c"
    assert (tmp_path / "state" / "certificates" / "example.test" / "meta.json").exists()
    assert not (tmp_path / "state" / "certificates" / "example.test" / "cert.pem").exists()


def test_version_folders_can_be_entered_whatever_the_umask(tmp_path: Path) -> None:
    """The README's systemd unit sets UMask=0077: a renewal from the timer made its new
    version folder 0700, and a service reading the key through its group (chgrp ssl-cert;
    chmod 640 privkey.pem) lost it at the first renewal. What may read a file is its own
    mode's business; the folders on the way are 0755."""
    store = Store(tmp_path / "state")
    out = tmp_path / "tls"
    lineage = Lineage(name="example.test", domains=["example.test"], servers=["https://ca/"],
                      out=str(out))
    files = {"privkey.pem": b"k", "cert.pem": b"c", "fullchain.pem": b"c"}
    old = os.umask(0o077)
    try:
        store.save_certificate(lineage, files)
        (out / "privkey.pem").chmod(0o640)
        store.save_certificate(lineage, files)
    finally:
        os.umask(old)
    assert (out / "versions").stat().st_mode & 0o777 == 0o755
    for version in store.versions(lineage):
        assert version.stat().st_mode & 0o777 == 0o755, version
    assert (out / "privkey.pem").stat().st_mode & 0o777 == 0o640


def test_metadata_from_a_newer_version_still_loads(tmp_path: Path) -> None:
    store = Store(tmp_path)
    lineage = Lineage(name="a.test", domains=["a.test"], servers=["https://ca/"])
    store.save_meta(lineage)
    meta = tmp_path / "certificates" / "a.test" / "meta.json"
    meta.write_text(json.dumps({**json.loads(meta.read_text()), "future_field": 1}))
    assert store.load_lineage("a.test") == lineage


def test_accounts_live_apart_per_ca(tmp_path: Path) -> None:
    store = Store(tmp_path)
    a, b = "https://acme-v02.api.letsencrypt.org/directory", "https://ca.example/acme/directory"
    assert ca_folder_name(a).startswith("acme-v02.api.letsencrypt.org_directory-")
    assert ca_folder_name(a) != ca_folder_name(a + "2")
    store.save_account(StoredAccount(a, "https://le/acct/1", b"key-a"))
    store.save_account(StoredAccount(b, "https://ca/acct/9", b"key-b"))
    loaded = store.load_account(a)
    assert loaded is not None and loaded.url == "https://le/acct/1" and loaded.key_pem == b"key-a"
    assert (store.account_dir(a) / "account.key").stat().st_mode & 0o777 == 0o600
    store.save_pending_key(a, b"next")
    loaded = store.load_account(a)
    assert loaded is not None and loaded.pending_key_pem == b"next"
    store.promote_pending_key(a)
    loaded = store.load_account(a)
    assert loaded is not None and loaded.key_pem == b"next" and loaded.pending_key_pem is None
    archived = list((store.account_dir(a) / "archive").iterdir())
    assert [p.read_bytes() for p in archived] == [b"key-a"]
    assert archived[0].stat().st_mode & 0o777 == 0o600


def test_lineage_names() -> None:
    assert lineage_name_for(["*.example.test", "example.test"]) == "_.example.test"
    assert check_lineage_name("example.test") == "example.test"
    for bad in ("../etc", "a/b", "", "Upper", ".hidden"):
        with pytest.raises(UsageError):
            check_lineage_name(bad)


def test_the_lock_keeps_a_second_run_out(tmp_path: Path) -> None:
    store = Store(tmp_path)
    with subprocess.Popen(
        [sys.executable, "-c",
         "import sys, time; from pathlib import Path; from lib.acme.store import Store\n"
         "with Store(Path(sys.argv[1])).locked():\n"
         "    print('held', flush=True); time.sleep(30)\n", str(tmp_path)],
        cwd=REPO_ROOT, stdout=subprocess.PIPE, text=True) as holder:
        try:
            assert holder.stdout is not None and holder.stdout.readline() == "held\n"
            with pytest.raises(LockBusy, match=r"another acmegw-acme run \(pid \d+\) holds"), \
                    store.locked(timeout=0.3):
                pass
        finally:
            holder.kill()
    with store.locked(timeout=5):  # free again once the holder is gone
        pass


def test_lifetime_rule_renews_with_a_third_left() -> None:
    lineage = Lineage(name="a", domains=["a"], servers=[],
                      not_before=iso(NOW - datetime.timedelta(days=59)),
                      not_after=iso(NOW + datetime.timedelta(days=31)), serial="1")
    assert not by_lifetime(lineage, NOW).due
    assert by_lifetime(lineage, NOW + datetime.timedelta(days=2)).due
    short = Lineage(name="b", domains=["b"], servers=[], serial="2",
                    not_before=iso(NOW - datetime.timedelta(days=4)),
                    not_after=iso(NOW + datetime.timedelta(days=2)))
    assert by_lifetime(short, NOW).due  # day 4 of 6


def test_ari_draws_one_moment_per_window_and_respects_retry_after() -> None:
    lineage = Lineage(name="a", domains=["a"], servers=[], serial="1")
    start, end = NOW + datetime.timedelta(days=10), NOW + datetime.timedelta(days=12)
    info = RenewalInfo(iso(start), iso(end), retry_after=7200)
    remember_window(lineage, info, NOW, random.Random(1))
    chosen = lineage.ari_chosen
    assert chosen is not None and start <= parse_iso(chosen) <= end
    assert not by_window(lineage, NOW).due
    assert by_window(lineage, parse_iso(chosen)).due
    assert by_window(lineage, end).due
    assert not ari_check_due(lineage, NOW + datetime.timedelta(hours=1))
    assert ari_check_due(lineage, NOW + datetime.timedelta(hours=2))
    remember_window(lineage, info, NOW, random.Random(2))  # same window: same moment
    assert lineage.ari_chosen == chosen
    moved = RenewalInfo(iso(NOW - datetime.timedelta(days=2)),
                        iso(NOW - datetime.timedelta(days=1)))
    remember_window(lineage, moved, NOW, random.Random(3))
    assert by_window(lineage, NOW).due
    # A CA asking to come back in a year is asked again within a day anyway.
    remember_window(lineage, RenewalInfo(iso(start), iso(end), retry_after=3e7), NOW)
    assert ari_check_due(lineage, NOW + datetime.timedelta(days=1))


def test_retry_after_parsing() -> None:
    assert parse_retry_after("120") == 120.0
    assert parse_retry_after(None) is None and parse_retry_after("soon") is None
    now = datetime.datetime(2030, 1, 1, 12, 0, 0, tzinfo=datetime.UTC).timestamp()
    assert parse_retry_after("Tue, 01 Jan 2030 12:00:30 GMT", now=now) == 30.0
    assert parse_retry_after("Tue, 01 Jan 2030 11:00:00 GMT", now=now) == 0.0
    assert parse_retry_after("99999999999999") == 365 * 86400.0
    assert parse_retry_after("Fri, 31 Dec 9999 23:59:59 GMT", now=now) == 365 * 86400.0


def test_every_alternate_link_is_found() -> None:
    headers = CaseInsensitiveDict({"Link": '<https://ca/cert/1/1>;rel="alternate", '
                                           '<https://ca/dir>;rel="index", '
                                           '<https://ca/cert/1/2>; rel=alternate'})
    assert parse_links(headers, "alternate") == ["https://ca/cert/1/1", "https://ca/cert/1/2"]
    assert parse_links(headers, "index") == ["https://ca/dir"]
    assert parse_links(CaseInsensitiveDict(), "alternate") == []


def test_problem_documents_show_type_detail_and_subproblems() -> None:
    problem = problem_from_json({
        "type": "urn:ietf:params:acme:error:rejectedIdentifier",
        "detail": "Some names were rejected",
        "subproblems": [{"type": "urn:ietf:params:acme:error:rejectedIdentifier",
                         "detail": "forbidden", "identifier": {"type": "dns",
                                                               "value": "bad.example"}}],
    }, status=400)
    assert problem.code == "rejectedIdentifier"
    assert str(problem) == ("urn:ietf:params:acme:error:rejectedIdentifier: Some names were "
                            "rejected [bad.example: rejectedIdentifier: forbidden]")
    assert str(problem_from_json("nonsense")) == "about:blank"


def test_a_directory_needs_only_the_three_resources() -> None:
    d = Directory.from_json("https://ca/dir", {"newNonce": "n", "newAccount": "a",
                                               "newOrder": "o", "meta": {"profiles": "bad"}})
    assert d.offered() == [] and d.profiles == {} and not d.external_account_required
    with pytest.raises(Exception, match="lacks newNonce"):
        Directory.from_json("https://ca/dir", {"newAccount": "a", "newOrder": "o"})
