"""The client against a small in-process ACME CA, for what pebble 2.4 cannot show.

:mod:`tests.acme.fake_ca` is built from RFC 8555, RFC 9773 (ARI) and the ACME
profiles draft; it checks every request (JWS shape and signature, nonce, url,
payload per resource) and the fixture fails the test on any deviation. The
client publishes its dns-01 values with the builtin provider in-process
(``--provider builtin``), and the fake really looks them up there.

Covered here: ARI (renewal window, ``replaces``, a refused ``replaces``),
profiles, a finalize answer without ``Location`` and ``processing`` orders,
``Retry-After`` on polls and on a busy (503) answer, ``badNonce`` retries, CA
failover after repeated failures, a directory without optional resources,
alternate chains, problem documents shown with type and detail, key rollover,
deactivation and revocation.
"""

from __future__ import annotations

import asyncio
import datetime
import io
import json
import time
from pathlib import Path

import pytest
from cryptography import x509

from lib.acme import jws
from lib.acme.client import AcmeClient
from lib.acme.issuance import Driver
from lib.acme.keys import generate_key, load_private_key, private_pem
from lib.acme.options import Options
from lib.acme.progress import Progress
from lib.acme.store import Lineage, Store
from lib.acme.transport import Transport
from providers.builtin import BuiltinProvider, BuiltinSettings
from tests.acme.conftest import NAMES, RigFactory, domains, fast
from tests.acme.fake_ca import FakeCA, ari_id
from tests.system import free_port

NOW = datetime.datetime.now(datetime.UTC)


async def test_finalize_without_location_processing_retry_after_and_bad_nonces(
        make_rig: RigFactory, tmp_path: Path) -> None:
    ca = FakeCA(retry_after=2, processing_polls=1, finalize_location=False, reject_nonces=3)
    rig = await make_rig(ca)
    sleeps: list[float] = []

    def sleep(seconds: float) -> None:
        sleeps.append(seconds)
        time.sleep(min(seconds, 0.05))

    store = Store(rig.state)
    lineage = Lineage(name="example.test", domains=list(NAMES), servers=rig.urls,
                      solver={"kind": "provider", "provider": "builtin"})
    stream = io.StringIO()
    options = Options(ca_file=str(rig.tls.ca), agree_tos=True, sleep=sleep,
                      env={"BUILTIN_LISTEN": f"127.0.0.1:{rig.dns_port}",
                           "BUILTIN_NS": "ns.example.test"})

    def run() -> str:
        driver = Driver(store, Progress(stream), options)
        try:
            outcome = driver.issue(lineage)
        finally:
            driver.close()
        assert outcome.error is None, stream.getvalue()
        return outcome.action

    assert await asyncio.to_thread(run) == "issued"
    assert ca.reject_nonces == 0  # every rejected nonce was retried
    assert ca.finalize_answers == 1
    # The CA's Retry-After (2 s) was used for the authorization and the processing order.
    assert sleeps.count(2.0) >= 2, sleeps
    # Without Location in the finalize answer, the order URL from newOrder was polled.
    finalize_at = max(i for i, (m, p) in enumerate(ca.seen) if p.startswith("/finalize/"))
    assert any(p.startswith("/order/") for _, p in ca.seen[finalize_at + 1:]), ca.seen
    assert set(rig.leaf().extensions.get_extension_for_class(
        x509.SubjectAlternativeName).value.get_values_for_type(x509.DNSName)) == set(NAMES)
    text = stream.getvalue()
    steps = ["Directory", "Account", "newOrder", "Authorization", "Publishing", "Challenge",
             "Removed", "Finalize", "Certificate", "Saved"]
    positions = [text.index(step) for step in steps]
    assert positions == sorted(positions), text  # the steps read in RFC 8555 order


async def test_a_busy_answer_is_waited_out_by_its_retry_after(make_rig: RigFactory) -> None:
    ca = fast(busy_new_order=1, busy_retry_after=1)
    rig = await make_rig(ca)
    status, out, err = await rig.cli("issue", *domains())
    assert status == 0, err
    assert len(ca.new_orders) == 2
    assert "retry after" not in out


async def test_fails_over_to_the_next_ca_after_repeated_failures(make_rig: RigFactory) -> None:
    broken, good = fast(fail_new_order=-1), fast()
    rig = await make_rig(broken, good)
    status, _out, err = await rig.cli("issue", *domains(), "--attempts", "2", servers=rig.urls)
    assert status == 0, err
    assert len(broken.new_orders) == 2 and len(good.new_orders) == 1
    assert f"Failing over from 127.0.0.1:{rig.urls[0].split(':')[2].split('/')[0]}" in err
    assert "urn:ietf:params:acme:error:serverInternal: the fake CA is broken today" in err
    assert rig.lineage().issuer_directory == rig.urls[1]
    assert rig.lineage().servers == rig.urls

    # When every CA fails, the run fails and says what each one answered.
    good.fail_new_order = -1
    status, out, err = await rig.cli("issue", *domains(), "--attempts", "1", "--force",
                                     servers=rig.urls)
    assert status == 1
    assert "no CA issued the certificate" in err
    assert err.count("the fake CA is broken today") >= 2
    assert "example.test: FAILED: no CA issued the certificate" in out

    # --quiet keeps the progress quiet, not the failure.
    status, out, err = await rig.cli("renew", "--force", "--quiet", "--attempts", "1",
                                     "--retry-delay", "0")
    assert status == 1 and out == ""
    assert err.startswith("acmegw-acme: error: example.test: FAILED: no CA issued")
    assert err.count("\n") == 1


async def test_ari_decides_renewal_and_the_new_order_replaces_the_old(
        make_rig: RigFactory) -> None:
    ca = fast(ari_window=(NOW + datetime.timedelta(days=30), NOW + datetime.timedelta(days=32)))
    rig = await make_rig(ca)
    status, _, err = await rig.cli("issue", *domains())
    assert status == 0, err
    first = rig.leaf()
    assert rig.lineage().ari_id == ari_id(first)
    assert "replaces" not in ca.new_orders[0]

    status, out, err = await rig.cli("renew")
    assert status == 0, err
    assert ca.ari_queries == [ari_id(first)]
    assert "not due, the CA suggests renewing at" in err
    assert len(ca.new_orders) == 1
    lineage = rig.lineage()
    assert lineage.ari_chosen is not None
    chosen = datetime.datetime.fromisoformat(lineage.ari_chosen.replace("Z", "+00:00"))
    assert NOW + datetime.timedelta(days=30) - datetime.timedelta(seconds=1) <= chosen
    assert chosen <= NOW + datetime.timedelta(days=32)

    # Within the CA's Retry-After the kept window is used without asking again.
    status, _, err = await rig.cli("renew")
    assert status == 0 and len(ca.ari_queries) == 1, err

    # The CA moves the window into the past (as before a mass revocation); once its
    # Retry-After has passed, the client asks again and renews with "replaces".
    ca.ari_window = (NOW - datetime.timedelta(days=2), NOW - datetime.timedelta(days=1))
    meta = rig.state / "certificates" / "example.test" / "meta.json"
    doc = json.loads(meta.read_text())
    doc["ari_next_check"] = "2000-01-01T00:00:00Z"
    meta.write_text(json.dumps(doc))
    status, out, err = await rig.cli("renew")
    assert status == 0, err
    assert "renewal window ended" in err
    assert ca.new_orders[-1]["replaces"] == ari_id(first)
    assert rig.leaf().serial_number != first.serial_number
    assert "example.test: renewed" in out


async def test_a_refused_replaces_is_ordered_again_without_it(make_rig: RigFactory) -> None:
    ca = fast(ari_window=(NOW - datetime.timedelta(days=2), NOW - datetime.timedelta(days=1)),
              refuse_replaces=True)
    rig = await make_rig(ca)
    assert (await rig.cli("issue", *domains()))[0] == 0
    status, _, err = await rig.cli("renew")
    assert status == 0, err
    assert [("replaces" in o) for o in ca.new_orders] == [False, True, False]
    assert "alreadyReplaced" in err


async def test_profiles_when_offered(make_rig: RigFactory) -> None:
    ca = fast(profiles={"classic": "90 days", "shortlived": "6 days"})
    rig = await make_rig(ca)
    status, _, err = await rig.cli("issue", *domains(), "--profile", "shortlived")
    assert status == 0, err
    assert ca.new_orders[-1]["profile"] == "shortlived"
    assert "profiles classic, shortlived" in err
    leaf = rig.leaf()
    assert leaf.not_valid_after_utc - leaf.not_valid_before_utc < datetime.timedelta(days=7)
    assert rig.lineage().profile == "shortlived"

    status, _, err = await rig.cli("issue", "-d", "other.example.test", "--profile", "nope")
    assert status == 2
    assert "has no profile 'nope' (it offers: classic, shortlived)" in err
    assert len(ca.new_orders) == 1


async def test_a_directory_without_optional_resources(make_rig: RigFactory) -> None:
    ca = fast(offer=frozenset(), terms=None)
    rig = await make_rig(ca)
    status, _, err = await rig.cli("issue", *domains(), "--profile", "classic")
    assert status == 2 and "offers no profiles" in err
    status, _, err = await rig.cli("issue", *domains())
    assert status == 0, err
    assert f"Directory {rig.urls[0]}: no optional resources" in err
    status, _, err = await rig.cli("renew")
    assert status == 0 and "days left; due at" in err, err
    assert ca.ari_queries == []
    cert = str(rig.state / "certificates" / "example.test" / "cert.pem")
    status, _, err = await rig.cli("revoke", "--cert", cert)
    assert status == 2 and "does not offer revocation (revokeCert)" in err
    status, _, err = await rig.cli("account", "rollover", "--server", rig.urls[0])
    assert status == 2 and "does not offer key rollover (keyChange)" in err


async def test_the_preferred_chain_is_chosen_by_issuer_name(make_rig: RigFactory) -> None:
    ca = fast()
    rig = await make_rig(ca)
    status, _, err = await rig.cli("issue", *domains(), "--preferred-chain", "Fake Root X2")
    assert status == 0, err
    chain = x509.load_pem_x509_certificates(
        (rig.state / "certificates" / "example.test" / "chain.pem").read_bytes())
    assert chain[-1].issuer.rfc4514_string() == "CN=Fake Root X2"
    assert '2 chains, to "Fake Root X1", "Fake Root X2"; using "Fake Root X2"' in err

    status, _, err = await rig.cli("issue", *domains(), "--force", "--preferred-chain", "Nobody")
    assert status == 0, err
    chain = x509.load_pem_x509_certificates(
        (rig.state / "certificates" / "example.test" / "chain.pem").read_bytes())
    assert chain[-1].issuer.rfc4514_string() == "CN=Fake Root X1"
    assert 'no chain leads to "Nobody"' in err


async def test_a_failed_validation_shows_the_problem_and_withdraws_the_values(
        make_rig: RigFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    ca = fast()
    rig = await make_rig(ca)
    # The CA looks at another DNS server, which serves nothing.
    elsewhere = free_port()
    ca.dns_server = ("127.0.0.1", elsewhere)
    empty = BuiltinProvider(BuiltinSettings(listen=(("127.0.0.1", elsewhere),),
                                            nameservers=("ns.example.test",)), ("example.test",))
    await empty.open()
    try:
        status, out, err = await rig.cli("issue", *domains(), "--attempts", "1")
    finally:
        await empty.aclose()
    assert status == 1
    assert "urn:ietf:params:acme:error:unauthorized" in err or "unauthorized: no TXT" in err, err
    assert "Removed the 2 TXT value(s)" in err
    assert "example.test: FAILED" in out


async def test_rollover_deactivation_and_revocation(make_rig: RigFactory) -> None:
    ca = fast()
    rig = await make_rig(ca)
    assert (await rig.cli("issue", *domains(), "--reuse-key"))[0] == 0
    store = Store(rig.state)
    before = store.load_account(rig.urls[0])
    assert before is not None

    status, out, err = await rig.cli("account", "rollover", "--server", rig.urls[0],
                                     "--account-key-type", "ec384")
    assert status == 0, err
    assert ca.key_changes == 1
    after = store.load_account(rig.urls[0])
    assert after is not None and after.key_pem != before.key_pem and after.url == before.url
    assert after.pending_key_pem is None
    assert list((store.account_dir(rig.urls[0]) / "archive").iterdir())
    assert "ec384" in out

    # The new key signs what follows (the fake verifies every signature).
    key_before = (rig.state / "certificates" / "example.test" / "privkey.pem").read_bytes()
    assert (await rig.cli("issue", *domains(), "--reuse-key", "--force"))[0] == 0
    assert (rig.state / "certificates" / "example.test" / "privkey.pem").read_bytes() == key_before

    serial = format(rig.leaf().serial_number, "x")
    cert = str(rig.state / "certificates" / "example.test" / "cert.pem")
    status, out, err = await rig.cli("revoke", "--cert", cert, "--reason", "keyCompromise")
    assert status == 0, err
    assert ca.revoked == {serial: 1}
    assert rig.lineage().revoked == "keyCompromise"
    status, out, err = await rig.cli("renew")
    assert status == 0 and "skipped, revoked" in err
    # A compromised key is never reused, --reuse-key or not.
    assert (await rig.cli("issue", *domains(), "--reuse-key"))[0] == 0
    assert (rig.state / "certificates" / "example.test" / "privkey.pem").read_bytes() != key_before

    status, _, err = await rig.cli("account", "deactivate", "--server", rig.urls[0])
    assert status == 2 and "--yes" in err
    status, out, err = await rig.cli("account", "deactivate", "--server", rig.urls[0], "--yes")
    assert status == 0, err
    assert "deactivated" in out
    assert store.load_account(rig.urls[0]) is None
    status, _, err = await rig.cli("account", "show", "--server", rig.urls[0])
    assert status == 2 and "account register" in err


async def test_json_output_and_no_secrets(make_rig: RigFactory) -> None:
    ca = fast()
    rig = await make_rig(ca)
    status, out, err = await rig.cli("issue", *domains(), "--json", "--quiet")
    assert status == 0, err
    assert err == ""
    doc = json.loads(out)
    assert doc["ok"] is True and doc["command"] == "issue"
    assert doc["certificates"][0]["action"] == "issued"
    assert doc["certificates"][0]["serial"] == format(rig.leaf().serial_number, "x")
    assert any("newOrder" in s["message"] for s in doc["steps"])

    status, out, _ = await rig.cli("list", "--json")
    rows = json.loads(out)["certificates"]
    assert status == 0 and rows[0]["name"] == "example.test" and rows[0]["state"] == "valid"


async def test_issue_again_keeps_a_certificate_not_due_but_takes_the_new_settings(
        make_rig: RigFactory) -> None:
    ca = fast(offer=frozenset({"revokeCert", "keyChange"}))
    rig = await make_rig(ca)
    assert (await rig.cli("issue", *domains()))[0] == 0
    serial = rig.leaf().serial_number
    status, out, err = await rig.cli("issue", *domains(), "--deploy-hook", "true",
                                     "--key-type", "rsa2048")
    assert status == 0, err
    assert "example.test: kept" in out and "is not due" in err
    assert len(ca.new_orders) == 1 and rig.leaf().serial_number == serial
    lineage = rig.lineage()
    assert lineage.deploy_hook == "true" and lineage.key_type == "rsa2048"


async def test_an_interrupted_rollover_is_finished_or_undone(make_rig: RigFactory) -> None:
    ca = fast()
    rig = await make_rig(ca)
    url = rig.urls[0]
    assert (await rig.cli("account", "register", "--server", url, "--agree-tos"))[0] == 0
    store = Store(rig.state)

    # A next key the CA never saw (the run died before keyChange): dropped.
    store.save_pending_key(url, private_pem(generate_key("ec256")))
    status, _, err = await rig.cli("account", "show", "--server", url)
    assert status == 0 and "had not happened; keeping the key" in err, err
    kept = store.load_account(url)
    assert kept is not None and kept.pending_key_pem is None

    # The CA switched keys but the run died before installing the new one: installed now.
    new = jws.AccountKey(generate_key("ec256"))

    def change_key_at_the_ca() -> None:
        transport = Transport(url, jws.AccountKey(load_private_key(kept.key_pem)),
                              ca_file=str(rig.tls.ca))
        transport.account_url = kept.url
        try:
            AcmeClient(transport).change_key(new)
        finally:
            transport.close()

    store.save_pending_key(url, private_pem(new.private_key))
    await asyncio.to_thread(change_key_at_the_ca)
    assert ca.key_changes == 1
    status, out, err = await rig.cli("account", "show", "--server", url)
    assert status == 0 and "had succeeded; using the new key" in err, err
    installed = store.load_account(url)
    assert installed is not None and installed.pending_key_pem is None
    assert installed.key_pem == private_pem(new.private_key)
    assert new.thumbprint() in out


async def test_a_provider_that_cannot_start_is_a_clear_failure(
        make_rig: RigFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    ca = fast()
    rig = await make_rig(ca)
    # Something else already serves the builtin provider's port.
    busy = BuiltinProvider(BuiltinSettings(listen=(("127.0.0.1", rig.dns_port),),
                                           nameservers=("ns.example.test",)), ("example.test",))
    await busy.open()
    try:
        status, out, err = await rig.cli("issue", *domains())
    finally:
        await busy.aclose()
    assert status == 1
    assert "example.test: FAILED: builtin: cannot start" in out, err
    assert "Traceback" not in err
    assert len(ca.new_orders) == 1  # not retried: another CA would not help


async def test_an_account_the_ca_forgot_is_created_again_at_renewal(make_rig: RigFactory) -> None:
    ca = fast(offer=frozenset({"revokeCert", "keyChange"}))
    rig = await make_rig(ca)
    assert (await rig.cli("issue", *domains(), "--email", "admin@example.test"))[0] == 0
    # The same terms the user agreed to: a timer's renew goes on by itself.
    ca.forget_accounts()
    status, out, err = await rig.cli("renew", "--force")
    assert status == 0, err
    assert "the CA no longer knows the account" in err
    assert f"Agreeing again to {ca.terms}, the terms agreed to when the account was created" in err
    account = Store(rig.state).load_account(rig.urls[0])
    assert account is not None and account.contact == ["mailto:admin@example.test"]

    # New terms: the user must agree to them, and renew takes --agree-tos to do so.
    ca.terms = "https://ca.example/terms-v2"
    ca.forget_accounts()
    status, out, err = await rig.cli("renew", "--force")
    assert status == 1
    assert "(they changed since you agreed): read them, then pass --agree-tos" in out
    status, out, err = await rig.cli("renew", "--force", "--agree-tos")
    assert status == 0, err
    account = Store(rig.state).load_account(rig.urls[0])
    assert account is not None and account.terms_agreed == "https://ca.example/terms-v2"


async def test_must_staple_is_asked_for_in_the_csr(make_rig: RigFactory) -> None:
    rig = await make_rig(fast())
    status, _, err = await rig.cli("issue", *domains(), "--must-staple")
    assert status == 0, err
    assert "must-staple" in err
    feature = rig.leaf().extensions.get_extension_for_class(x509.TLSFeature).value
    assert list(feature) == [x509.TLSFeatureType.status_request]
    assert rig.lineage().must_staple is True


async def test_a_damaged_account_json_is_rebuilt_from_the_key(make_rig: RigFactory) -> None:
    """account.json only notes what the CA tells again (the account's URL and contact);
    the key is the account. A damaged one failed every certificate at that CA, at every
    run (issue 16 item 2's kind)."""
    ca = fast(offer=frozenset({"revokeCert", "keyChange"}))
    rig = await make_rig(ca)
    assert (await rig.cli("issue", *domains(), "--email", "admin@example.test"))[0] == 0
    folder = Store(rig.state).account_dir(rig.urls[0])
    stored = Store(rig.state).load_account(rig.urls[0])
    assert stored is not None
    (folder / "account.json").write_text("{damaged")
    status, _, err = await rig.cli("renew", "--force")
    assert status == 0, err
    assert f"{folder}/account.json is unreadable" in err and "found by its key" in err
    account = Store(rig.state).load_account(rig.urls[0])
    assert account is not None and account.url == stored.url and not account.damage
    assert account.contact == ["mailto:admin@example.test"]
