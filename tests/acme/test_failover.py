"""What a run does when a CA says no, says wait, hangs, or is slow to issue (fake CA).

Pebble cannot be made to answer 503 with a long ``Retry-After``, to hang, to answer a
chosen problem type, or to keep an order processing: :mod:`tests.acme.fake_ca` can.
Each test counts what the CA received, so "not retried" and "not asked again" are
facts about the wire, not about the output.
"""

from __future__ import annotations

import contextlib
import socket
import threading
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from lib.acme import arguments, cli
from lib.acme.client import AcmeClient
from lib.acme.dns01 import ProviderSolver
from lib.acme.store import Lineage, Store
from tests.acme.conftest import Rig, RigFactory, domains, fast
from tests.acme.fake_ca import FakeCA

NO_ARI = frozenset({"revokeCert", "keyChange"})


class Crash(BaseException):
    """The process died here."""


async def two_certificates(make_rig: RigFactory, ca: FakeCA) -> Rig:
    rig = await make_rig(ca)
    for name in ("a.example.test", "b.example.test"):
        status, _, err = await rig.cli("issue", "-d", name)
        assert status == 0, err
    return rig


@pytest.mark.parametrize("problem", ["malformed", "rejectedIdentifier", "caa", "badCSR",
                                     "userActionRequired", "unauthorized"])
async def test_problems_another_try_cannot_fix_are_not_retried(make_rig: RigFactory,
                                                                problem: str) -> None:
    ca = fast(new_order_problem=(problem, 400))
    rig = await make_rig(ca)
    status, out, err = await rig.cli("issue", *domains(), "--attempts", "3")
    assert status == 1, err
    assert len(ca.new_orders) == 1
    assert f"urn:ietf:params:acme:error:{problem}: the fake CA says {problem}" in out
    assert "attempt 1 of 3" in err and "attempt 2" not in err


async def test_a_long_retry_after_leaves_the_ca_alone_for_the_rest_of_the_run(
        make_rig: RigFactory) -> None:
    ca = fast(offer=NO_ARI)
    rig = await two_certificates(make_rig, ca)
    orders = len(ca.new_orders)
    ca.busy_new_order, ca.busy_retry_after = 100, 3600
    status, out, err = await rig.cli("renew", "--force", "--retry-delay", "0")
    assert status == 1
    # Asked once; the second certificate did not ask again.
    assert len(ca.new_orders) == orders + 1
    assert "it asks to be left alone for 1 h (until " in err and ", Retry-After)" in err
    assert out.count("FAILED") == 2
    assert "b.example.test: FAILED: 127.0.0.1" in out and "not asked again in this run" in out


async def test_a_retry_after_within_the_deadline_is_waited_out(
        make_rig: RigFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    waits: list[float] = []

    def sleep(seconds: float) -> None:
        waits.append(seconds)

    real = arguments.options
    monkeypatch.setattr(arguments, "options", lambda args: replace(real(args), sleep=sleep))
    ca = fast(busy_new_order=1, busy_retry_after=40)
    rig = await make_rig(ca)
    # 40 s is longer than the transport waits by itself but ends before the certificate's
    # deadline: the policy waits exactly that (not --retry-delay) and asks again.
    status, _, err = await rig.cli("issue", *domains(), "--retry-delay", "0", "--timeout", "600")
    assert status == 0, err
    # (then only the short polls of the order)
    assert waits[0] == 40.0 and max(waits[1:]) < 5 and "again in 40s" in err
    assert len(ca.new_orders) == 2


async def test_a_hung_ca_is_reported_promptly_and_not_asked_again(make_rig: RigFactory) -> None:
    ca = fast(offer=NO_ARI)
    rig = await two_certificates(make_rig, ca)
    ca.hang = True
    before = len(ca.seen)
    status, out, err = await rig.cli("renew", "--force", "--http-timeout", "1")
    assert status == 1
    assert ca.seen[before:] == [("GET", "/dir")], ca.seen[before:]
    assert "did not answer within 1s" in err
    assert out.count("FAILED") == 2 and "not asked again in this run" in out


async def test_an_order_still_processing_at_its_deadline_is_resumed_not_replaced(
        make_rig: RigFactory) -> None:
    ca = fast(processing_polls=10**9)
    rig = await make_rig(ca)
    # The deadline bounds the validation too, and no try is made past it: on a loaded
    # machine 1 s could end before the order was finalized.
    status, _, err = await rig.cli("issue", *domains(), "--timeout", "4", "--attempts", "2")
    assert status == 1
    assert "the next try or run resumes it" in err
    assert (len(ca.new_orders), ca.finalize_answers) == (1, 1)

    ca.processing_polls = 0
    status, _, err = await rig.cli("issue", *domains())
    assert status == 0, err
    assert "Resuming order" in err
    # The certificate the CA issued for the first order, not a second one.
    assert (len(ca.new_orders), ca.finalize_answers) == (1, 1)
    assert not (rig.state / "certificates" / "example.test" / "pending.json").exists()


async def killed_at_finalize(rig: Rig, monkeypatch: pytest.MonkeyPatch, *,
                             after_sending: bool) -> None:
    """An issue whose process dies at finalize, before or after the CSR is sent."""
    real = AcmeClient.finalize

    def die(self: AcmeClient, *args: object) -> object:
        if after_sending:
            real(self, *args)  # type: ignore[arg-type]
        raise Crash("killed at finalize")

    monkeypatch.setattr(AcmeClient, "finalize", die)
    with pytest.raises(Crash):
        await rig.cli("issue", *domains())
    monkeypatch.setattr(AcmeClient, "finalize", real)


async def test_an_order_left_by_a_crash_after_finalize_is_resumed(
        make_rig: RigFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    ca = fast()
    rig = await make_rig(ca)
    await killed_at_finalize(rig, monkeypatch, after_sending=True)
    status, _, err = await rig.cli("issue", *domains())
    assert status == 0, err
    assert "Resuming order" in err
    assert (len(ca.new_orders), ca.finalize_answers) == (1, 1)
    lineage = rig.lineage()
    assert lineage.serial == format(rig.leaf().serial_number, "x")


async def test_values_that_die_with_the_process_are_not_journaled(
        make_rig: RigFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    """The builtin provider's values end with the process: a killed run leaves nothing to
    withdraw, and the next run must not start a DNS server just to remove nothing."""
    rig = await make_rig(fast())
    real = ProviderSolver.teardown

    def die_before_withdrawing(self: ProviderSolver, *args: Any) -> list[str]:
        raise Crash("killed while the values were published")

    monkeypatch.setattr(ProviderSolver, "teardown", die_before_withdrawing)
    with pytest.raises(Crash):
        await rig.cli("issue", *domains())
    assert not (rig.state / "published.json").exists()
    monkeypatch.setattr(ProviderSolver, "teardown", real)
    status, _, err = await rig.cli("issue", *domains())
    assert status == 0, err
    assert "TXT value(s) left by an earlier run" not in err


@pytest.mark.parametrize("finalized", [False, True])
async def test_a_damaged_key_of_a_pending_order_does_not_block_the_certificate(
        make_rig: RigFactory, monkeypatch: pytest.MonkeyPatch, finalized: bool) -> None:
    """The key kept beside a pending order was loaded at every run, and a damaged one
    failed the certificate at every run, for good. Before finalize a new key will do;
    after it, the CA's certificate is of no use and the certificate is ordered anew."""
    ca = fast()
    rig = await make_rig(ca)
    await killed_at_finalize(rig, monkeypatch, after_sending=finalized)
    kept = rig.state / "certificates" / "example.test" / "pending-key.pem"
    kept.write_text("-----BEGIN PRIVATE KEY-----\ndamaged\n-----END PRIVATE KEY-----\n")
    status, _, err = await rig.cli("issue", *domains())
    assert status == 0, err
    assert "the stored key of the pending order is unreadable" in err
    assert len(ca.new_orders) == (2 if finalized else 1)
    assert not kept.exists()


@contextlib.contextmanager
def closed_at_once() -> Iterator[tuple[str, list[int]]]:
    """A CA that is down: its port takes connections and closes them unanswered (the
    count of connections is what the CA "received")."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(16)
    server.settimeout(0.1)
    accepted: list[int] = []
    done = threading.Event()

    def serve() -> None:
        while not done.is_set():
            try:
                connection, _ = server.accept()
            except TimeoutError:
                continue
            accepted.append(1)
            connection.close()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield f"https://127.0.0.1:{server.getsockname()[1]}/dir", accepted
    finally:
        done.set()
        thread.join()
        server.close()


def test_a_ca_that_cannot_be_reached_is_not_asked_again_for_every_certificate(
        tmp_path: Path, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Issue 16 item 8 left a hung CA alone for the rest of the run, but a CA that is
    down (a refused or dropped connection) was asked again, with back-off, for every
    certificate: three certificates took 15 s and six tries at the default settings."""
    monkeypatch.delenv("PROVIDER", raising=False)
    store = Store(tmp_path / "state")
    with closed_at_once() as (url, accepted):
        for name in ("a.example.test", "b.example.test", "c.example.test"):
            store.save_meta(Lineage(name=name, domains=[name], servers=[url],
                                    solver={"kind": "provider", "provider": "memory"}))
        status = cli.main(["renew", "--state-dir", str(store.root), "--attempts", "2",
                           "--retry-delay", "0"])
        tries = len(accepted)
    out, err = capsys.readouterr()
    assert status == 1
    assert tries == 2, err
    assert out.count("FAILED") == 3
    assert "could not be reached; not asked again in this run" in out
    host = url.split("/")[2]
    assert err.count(f"Skipping {host}: could not be reached") == 2, err
    # A dropped handshake is no reason to suspect the CA file.
    assert "TLS with" in out and "--ca-file" not in out


async def test_the_back_off_never_waits_past_the_certificates_deadline(
        make_rig: RigFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    """The back-off doubled without a bound: --attempts 10 with the default 5 s waited
    5 + 10 + ... + 1280 s (42 minutes) for one certificate, past its --timeout."""
    waits: list[float] = []
    real = arguments.options
    # (the rig passes --retry-delay 0)
    monkeypatch.setattr(arguments, "options", lambda args: replace(real(args), sleep=waits.append,
                                                             retry_delay=100.0))
    ca = fast(new_order_problem=("serverInternal", 500))
    rig = await make_rig(ca)
    status, _, err = await rig.cli("issue", *domains(), "--attempts", "10", "--timeout", "250")
    assert status == 1
    # 100 s and 200 s end before the deadline; 400 s would not (the fake sleep takes no time).
    assert waits == [100.0, 200.0], err
    assert len(ca.new_orders) == 3


async def test_an_answer_that_trickles_in_is_bounded_like_no_answer(make_rig: RigFactory) -> None:
    """--http-timeout bounded each read, not the answer: a CA that sends a byte every
    few seconds held the run (and the lock) for as long as it kept sending."""
    ca = fast(offer=NO_ARI)
    rig = await two_certificates(make_rig, ca)
    ca.dribble = 8.0
    before = len(ca.seen)
    status, out, err = await rig.cli("renew", "--force", "--http-timeout", "1")
    assert status == 1
    assert ca.seen[before:] == [("GET", "/dir")], ca.seen[before:]
    assert "did not answer within 1s" in err, err
    assert out.count("FAILED") == 2 and "not asked again in this run" in out


async def test_an_absurd_retry_after_is_a_long_one_not_a_crash(make_rig: RigFactory) -> None:
    """A Retry-After of 10^14 seconds (a CA's bug) made the run's arithmetic overflow: an
    internal error for the certificate, and the CA asked again for the next one."""
    ca = fast(offer=NO_ARI)
    rig = await two_certificates(make_rig, ca)
    orders = len(ca.new_orders)
    ca.busy_new_order, ca.busy_retry_after = 100, 10**14
    status, out, err = await rig.cli("renew", "--force", "--retry-delay", "0")
    assert status == 1
    assert "internal error" not in out + err
    assert len(ca.new_orders) == orders + 1
    assert "it asks to be left alone for" in err and "not asked again in this run" in out
