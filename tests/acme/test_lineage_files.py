"""A certificate's files survive a crash at any moment, and keep their owner, group and mode.

The client runs against the fake CA (:mod:`tests.acme.conftest`). A crash is simulated
by making the N-th call that changes the file system (``rename``, ``replace``,
``symlink``, ``mkdir``, ``open`` for writing) raise an exception no code catches, for
every N until a renewal gets through: after each one, the key and the certificate a
web server would open (``privkey.pem`` and ``fullchain.pem`` in the certificate's
folder) belong together, and the next run repairs what was left and ends with metadata
that matches the files.
"""

from __future__ import annotations

import grp
import json
import os
import shutil
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509

from lib.acme.certificates import key_matches
from lib.acme.store import Store
from tests.acme.conftest import Rig, RigFactory, domains, fast

FILES = ("privkey.pem", "cert.pem", "chain.pem", "fullchain.pem")
NO_ARI = frozenset({"revokeCert", "keyChange"})


class Crash(BaseException):
    """The process died here (nothing catches a BaseException that is not ours)."""


@contextmanager
def crash_at(point: int) -> Iterator[list[str]]:
    """Make the *point*-th file system change raise :class:`Crash`; yields the calls seen."""
    seen: list[str] = []
    patch = pytest.MonkeyPatch()

    def wrap(name: str, real: Callable[..., Any],
             changes: Callable[..., bool] = lambda *a, **k: True) -> Callable[..., Any]:
        def call(*args: Any, **kwargs: Any) -> Any:
            if changes(*args, **kwargs):
                seen.append(f"{name}{args[:2]}")
                if len(seen) == point:
                    raise Crash(seen[-1])
            return real(*args, **kwargs)
        return call

    def writing(path: Any, flags: int, *args: Any, **kwargs: Any) -> bool:
        return bool(flags & (os.O_WRONLY | os.O_RDWR)) and "/state/" in str(path) \
            and not str(path).endswith("/lock")

    for name in ("rename", "replace", "symlink", "mkdir"):
        patch.setattr(os, name, wrap(name, getattr(os, name)))
    patch.setattr(os, "open", wrap("open", os.open, writing))
    try:
        yield seen
    finally:
        patch.undo()


def served_pair(rig: Rig) -> tuple[bytes, bytes]:
    folder = rig.state / "certificates" / "example.test"
    return (folder / "fullchain.pem").read_bytes(), (folder / "privkey.pem").read_bytes()


async def test_a_crash_at_any_point_of_a_renewal_never_pairs_a_certificate_with_another_key(
        make_rig: RigFactory) -> None:
    rig = await make_rig(fast(offer=NO_ARI))
    status, _, err = await rig.cli("issue", *domains())
    assert status == 0, err
    serials = {rig.leaf().serial_number}
    point = 0
    while True:
        point += 1
        assert point < 200, "the renewal never got through"
        with crash_at(point) as seen:
            try:
                status, _, err = await rig.cli("renew", "--force")
            except Crash:
                crashed = True
            else:
                crashed = False
                assert status == 0, err
        chain, key = served_pair(rig)
        assert key_matches(chain, key), f"crash at {seen[-1]}: the pair does not match"
        # The next run repairs what the crash left; what it then says is true.
        status, out, err = await rig.cli("renew")
        assert status == 0, f"after a crash at {seen[-1] if seen else '-'}: {err}"
        lineage = rig.lineage()
        leaf = rig.leaf()
        assert lineage.serial == format(leaf.serial_number, "x"), err
        assert key_matches(*served_pair(rig))
        status, out, _ = await rig.cli("list")
        assert status == 0 and out.startswith("example.test: valid,"), out
        serials.add(leaf.serial_number)
        if not crashed:
            break
    assert point > 10, f"too few crash points: is the file system wrapped? {seen}"
    # Every crash point after the switch to the new version left a new certificate in use.
    assert len(serials) > 1


async def test_the_key_keeps_its_owner_group_and_mode_across_renewals(
        make_rig: RigFactory) -> None:
    if os.geteuid() != 0:
        pytest.skip("changing a file's owner needs root")
    group = grp.getgrnam("nogroup").gr_gid
    rig = await make_rig(fast(offer=NO_ARI))
    assert (await rig.cli("issue", *domains()))[0] == 0
    folder = rig.state / "certificates" / "example.test"
    # What an administrator does so that a service not running as root reads the key:
    # through the link, as chgrp and chmod follow it.
    os.chown(folder / "privkey.pem", 1, group)
    os.chmod(folder / "privkey.pem", 0o640)
    os.chmod(folder / "fullchain.pem", 0o444)
    first = rig.leaf().serial_number
    status, _, err = await rig.cli("renew", "--force")
    assert status == 0, err
    assert rig.leaf().serial_number != first
    key = os.stat(folder / "privkey.pem")
    assert (key.st_uid, key.st_gid, key.st_mode & 0o7777) == (1, group, 0o640)
    assert os.stat(folder / "fullchain.pem").st_mode & 0o7777 == 0o444
    assert os.stat(folder / "cert.pem").st_mode & 0o7777 == 0o644


async def test_a_folder_left_by_an_interrupted_renewal_of_the_old_layout_is_repaired(
        make_rig: RigFactory) -> None:
    """Earlier releases wrote the files in place, cert.pem before privkey.pem: a kill in
    between left a new certificate beside the previous key, which renew called "kept"
    and list "valid". Built here as that code left it: plain files, earlier versions in
    archive/, and a certificate that is not for the key."""
    ca = fast(offer=NO_ARI)
    rig = await make_rig(ca)
    assert (await rig.cli("issue", *domains()))[0] == 0
    assert (await rig.cli("issue", *domains(), "--name", "other"))[0] == 0
    folder = rig.state / "certificates" / "example.test"
    previous = {name: (folder / name).read_bytes() for name in FILES}
    for name in FILES:
        (folder / name).unlink()
        (folder / name).write_bytes(previous[name])
    shutil.rmtree(folder / "versions", ignore_errors=True)
    (folder / "current").unlink(missing_ok=True)
    shutil.rmtree(folder / "archive", ignore_errors=True)
    archive = folder / "archive" / "20240101T000000.000000Z"
    archive.mkdir(parents=True)
    for name in FILES:
        (archive / name).write_bytes(previous[name])
    other = rig.state / "certificates" / "other"
    for name in ("cert.pem", "chain.pem", "fullchain.pem"):
        (folder / name).write_bytes((other / name).read_bytes())
    assert not key_matches(*served_pair(rig))

    status, out, _ = await rig.cli("list")
    assert "example.test: due (its newest certificate was lost with its key; renew issues " \
           "it again)" in out

    orders = len(ca.new_orders)
    status, out, err = await rig.cli("renew")
    assert status == 0, err
    assert "repaired: cert.pem was newer than privkey.pem" in err
    assert "example.test: renewed" in out
    assert len(ca.new_orders) == orders + 1
    assert key_matches(*served_pair(rig))
    # The folder is in the versioned layout now, the adopted files as its first version.
    assert (folder / "privkey.pem").is_symlink() and len(Store(rig.state).versions(
        rig.lineage())) == 2


async def test_a_failed_deploy_hook_runs_again_at_the_next_run(
        make_rig: RigFactory, tmp_path: Path) -> None:
    rig = await make_rig(fast(offer=NO_ARI))
    marker = tmp_path / "hook-may-succeed"
    runs = tmp_path / "hook-runs"
    hook = f'echo run >> {runs}; test -e {marker}'
    status, out, err = await rig.cli("issue", *domains(), "--deploy-hook", hook)
    assert status == 1 and "deploy hook exited with status 1" in err
    assert "it runs again at the next run" in err
    status, out, _ = await rig.cli("list")
    assert "(deploy hook pending)" in out
    marker.touch()
    status, out, err = await rig.cli("renew")
    assert status == 0, err
    assert "its deploy hook has not succeeded yet" in err and "deploy hook run" in out
    assert runs.read_text() == "run\nrun\n"
    assert (await rig.cli("renew"))[0] == 0
    assert runs.read_text() == "run\nrun\n"
    meta = json.loads((rig.state / "certificates" / "example.test" / "meta.json").read_text())
    assert meta["deploy_pending"] is False
    assert isinstance(x509.load_pem_x509_certificate(
        (rig.state / "certificates" / "example.test" / "cert.pem").read_bytes()),
        x509.Certificate)


@pytest.mark.parametrize("damage", ["out-folder-removed", "versions-removed",
                                    "certificate-damaged"])
async def test_an_issued_certificate_whose_files_are_gone_is_issued_again(
        make_rig: RigFactory, tmp_path: Path, damage: str) -> None:
    """A removed --out folder listed as 'valid' and was 'kept' by renew: the web server
    had no certificate until the old one came due, years later. Removed versions, or a
    damaged certificate, left the certificate 'broken' at every run, and issue --force
    refused too: only deleting its metadata by hand got it back."""
    rig = await make_rig(fast(offer=NO_ARI))
    out = tmp_path / "nginx"
    extra = ["--out", str(out)] if damage == "out-folder-removed" else []
    assert (await rig.cli("issue", *domains(), *extra))[0] == 0
    folder = out if extra else rig.state / "certificates" / "example.test"
    first = x509.load_pem_x509_certificate((folder / "cert.pem").read_bytes()).serial_number
    if damage == "out-folder-removed":
        shutil.rmtree(out)
    elif damage == "versions-removed":
        shutil.rmtree(folder / "versions")
    else:
        (folder / "current" / "cert.pem").write_text("damaged\n")

    status, out_text, _ = await rig.cli("list")
    assert out_text.startswith("example.test: due ("), out_text
    status, out_text, err = await rig.cli("renew")
    assert status == 0, err
    assert out_text.startswith("example.test: renewed"), out_text
    leaf = x509.load_pem_x509_certificate((folder / "cert.pem").read_bytes())
    assert leaf.serial_number != first
    assert key_matches((folder / "fullchain.pem").read_bytes(),
                       (folder / "privkey.pem").read_bytes())
    status, out_text, _ = await rig.cli("list")
    assert status == 0 and out_text.startswith("example.test: valid,"), out_text
