"""Pre- and post-hooks around a run, and dry runs (the fake CA counts what it was asked).

certbot's rules, which users bring along: a pre-hook runs once, before the first
certificate a run obtains, and not at all when nothing is due; the post-hooks run once
at the end of a run that ran them; the deploy hook runs per new certificate. A dry run
goes through the whole flow at the CA (order, validation, finalize, download) and
leaves nothing behind: no files, no metadata, no deploy hook, no pending order.
"""

from __future__ import annotations

import json
from pathlib import Path

from tests.acme.conftest import RigFactory, domains, fast

NO_ARI = frozenset({"revokeCert", "keyChange"})


def hooks(log: Path) -> list[str]:
    return ["--pre-hook", f"echo pre >> {log}", "--post-hook", f"echo post >> {log}",
            "--deploy-hook", f'echo "deploy $ACMEGW_CERT_NAME" >> {log}']


async def test_pre_and_post_hooks_run_once_per_run_and_only_when_something_is_due(
        make_rig: RigFactory, tmp_path: Path) -> None:
    rig = await make_rig(fast(offer=NO_ARI))
    log = tmp_path / "hooks.log"
    for name in ("a.example.test", "b.example.test"):
        status, _, err = await rig.cli("issue", "-d", name, *hooks(log))
        assert status == 0, err
    assert log.read_text().split("\n")[:-1] == ["pre", "deploy a.example.test", "post",
                                                "pre", "deploy b.example.test", "post"]
    log.write_text("")
    status, _, err = await rig.cli("renew", "--force")
    assert status == 0, err
    # Both certificates share the hooks: one pre-hook, one post-hook for the run.
    assert log.read_text().split("\n")[:-1] == ["pre", "deploy a.example.test",
                                                "deploy b.example.test", "post"]
    log.write_text("")
    assert (await rig.cli("renew"))[0] == 0  # nothing due: no hook at all
    assert log.read_text() == ""


async def test_a_failed_pre_hook_orders_nothing_and_a_failed_post_hook_fails_the_run(
        make_rig: RigFactory, tmp_path: Path) -> None:
    ca = fast(offer=NO_ARI)
    rig = await make_rig(ca)
    status, out, _ = await rig.cli("issue", *domains(), "--pre-hook", "exit 3",
                                     "--post-hook", f"echo post >> {tmp_path / 'post'}")
    assert status == 1
    assert "pre hook exited with status 3: no output; nothing was ordered" in out
    assert ca.new_orders == []
    assert (tmp_path / "post").read_text() == "post\n"  # the run ran its pre-hook

    status, out, _ = await rig.cli("issue", *domains(), "--post-hook", "echo oops; exit 1",
                                     "--json")
    assert status == 1
    doc = json.loads(out)
    assert doc["certificates"][0]["action"] == "issued"
    assert doc["post_hook_failures"] == ["post hook exited with status 1: oops"]


async def test_a_dry_run_goes_through_the_ca_and_leaves_nothing(
        make_rig: RigFactory, tmp_path: Path) -> None:
    ca = fast(offer=NO_ARI)
    rig = await make_rig(ca)
    log = tmp_path / "hooks.log"
    status, out, err = await rig.cli("issue", "-d", "new.example.test", "--dry-run", *hooks(log))
    assert status == 0, err
    assert "new.example.test: dry-run: the CA issued serial" in out
    assert ca.finalize_answers == 1 and len(ca.validated) == 1
    assert not (rig.state / "certificates" / "new.example.test").exists()
    assert log.read_text() == "pre\npost\n"  # as certbot: no deploy hook in a dry run

    assert (await rig.cli("issue", *domains(), "--deploy-hook", f"echo deploy >> {log}"))[0] == 0
    before = (rig.state / "certificates" / "example.test" / "meta.json").read_text()
    serial = rig.leaf().serial_number
    log.write_text("")
    status, out, err = await rig.cli("renew", "--dry-run")
    assert status == 0, err
    assert "example.test: dry-run: the CA issued serial" in out
    assert ca.finalize_answers == 3
    # The certificate in use, its metadata and its hook are untouched.
    assert rig.leaf().serial_number == serial
    assert (rig.state / "certificates" / "example.test" / "meta.json").read_text() == before
    assert log.read_text() == ""
    assert not (rig.state / "certificates" / "example.test" / "pending.json").exists()
    assert "replaces" not in ca.new_orders[-1]
