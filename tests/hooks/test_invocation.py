"""Every client's calling convention, as DESIGN.md's "Facts about the clients" records them."""

from __future__ import annotations

import base64
import hashlib

import pytest

from hooks.acmegw_hook import Change, Invocation, UsageError, parse_invocation

V1 = "A" * 43
V2 = "b-_" + "9" * 40


def test_mod_md_setup_and_both_teardowns() -> None:
    assert parse_invocation(["setup", "example.com", V1], {}) == Invocation(
        "mod_md", (Change(True, "example.com", V1),))
    assert parse_invocation(["teardown", "example.com", V1], {}).changes == (
        Change(False, "example.com", V1),)
    # MDChallengeDns01Version 1: no value; the gateway removes every value we set.
    assert parse_invocation(["teardown", "example.com"], {}).changes == (
        Change(False, "example.com", None),)


@pytest.mark.parametrize("argv", [
    ["setup", "example.com"],
    ["setup", "example.com", V1, "extra"],
    ["teardown"],
    ["teardown", "example.com", V1, V2],
])
def test_mod_md_wrong_arity_is_a_usage_error(argv: list[str]) -> None:
    with pytest.raises(UsageError, match="mod_md: usage"):
        parse_invocation(argv, {})


@pytest.mark.parametrize("argv", [
    ["renewed", "example.com"], ["installed", "example.com"], ["expiring", "example.com"],
    ["errored", "example.com"], ["renewing", "example.com"], ["ocsp-renewed", "example.com"],
    ["ocsp-errored", "example.com"], ["challenge-setup:dns-01:example.com", "example.com"],
])
def test_mod_md_message_cmd_events_are_acknowledged(argv: list[str]) -> None:
    invocation = parse_invocation(argv, {})
    assert invocation.changes == () and invocation.event is not None
    assert invocation.client == "mod_md"


def test_certbot_auth_and_cleanup_from_the_environment() -> None:
    env = {"CERTBOT_DOMAIN": "example.com", "CERTBOT_VALIDATION": V1,
           "CERTBOT_ALL_DOMAINS": "example.com,*.example.com",
           "CERTBOT_REMAINING_CHALLENGES": "1"}
    assert parse_invocation([], env) == Invocation("certbot", (Change(True, "example.com", V1),))
    # The cleanup hook gets CERTBOT_AUTH_OUTPUT, empty when the auth hook printed nothing.
    cleanup = parse_invocation([], {**env, "CERTBOT_AUTH_OUTPUT": ""})
    assert cleanup.changes == (Change(False, "example.com", V1),)


def test_no_arguments_without_certbot_is_a_usage_error() -> None:
    with pytest.raises(UsageError, match="CERTBOT_DOMAIN"):
        parse_invocation([], {"CERTBOT_DOMAIN": "example.com"})


def test_dehydrated_single_and_chained_triples() -> None:
    assert parse_invocation(["deploy_challenge", "example.com", "tok1", V1], {}).changes == (
        Change(True, "example.com", V1),)
    chained = parse_invocation(
        ["clean_challenge", "example.com", "tok1", V1, "example.com", "tok2", V2], {})
    assert chained.client == "dehydrated"
    assert chained.changes == (Change(False, "example.com", V1), Change(False, "example.com", V2))


def test_dehydrated_broken_triples_are_a_usage_error() -> None:
    with pytest.raises(UsageError, match="triples"):
        parse_invocation(["deploy_challenge", "example.com", "tok1"], {})
    with pytest.raises(UsageError, match="triples"):
        parse_invocation(["deploy_challenge"], {})


@pytest.mark.parametrize("event", [
    "startup_hook", "exit_hook", "generate_csr", "deploy_cert", "deploy_ocsp", "sync_cert",
    "unchanged_cert", "invalid_challenge", "request_failure",
    "this_hookscript_is_broken__dehydrated_is_working_fine__please_ignore_unknown_hooks_in_your_script",
])
def test_dehydrated_other_events_need_nothing(event: str) -> None:
    invocation = parse_invocation([event, "example.com", "a", "b"], {})
    assert invocation.changes == () and invocation.event == event


def test_uacme_dns01_begin_done_failed_and_declines_other_types() -> None:
    assert parse_invocation(["begin", "dns-01", "example.com", "tok", V1], {}).changes == (
        Change(True, "example.com", V1),)
    for method in ("done", "failed"):
        assert parse_invocation([method, "dns-01", "example.com", "tok", V1], {}).changes == (
            Change(False, "example.com", V1),)
    declined = parse_invocation(["begin", "http-01", "example.com", "tok", "tok.thumb"], {})
    assert declined.changes == () and declined.declined is not None
    assert "http-01" in declined.declined
    with pytest.raises(UsageError, match="uacme"):
        parse_invocation(["begin", "dns-01", "example.com"], {})


def test_lego_exec_default_and_raw_modes() -> None:
    assert parse_invocation(["present", "_acme-challenge.example.com.", V1], {}).changes == (
        Change(True, "_acme-challenge.example.com.", V1),)
    # Older lego versions add the TTL.
    assert parse_invocation(["cleanup", "_acme-challenge.example.com.", V1, "120"],
                            {}).changes == (Change(False, "_acme-challenge.example.com.", V1),)
    key_auth = "token123.thumbprint456"
    expected = base64.urlsafe_b64encode(hashlib.sha256(key_auth.encode()).digest()).rstrip(b"=")
    raw = parse_invocation(["present", "--", "example.com", "token123", key_auth], {})
    assert raw.changes == (Change(True, "example.com", expected.decode()),)


@pytest.mark.parametrize("argv", [
    ["setup", "example.com", "too-short"],
    ["setup", "example.com", "A" * 42 + "="],
    ["present", "_acme-challenge.example.com.", "x" * 44],
    ["begin", "dns-01", "example.com", "tok", "not a value"],
])
def test_values_that_dns01_never_produces_are_refused_before_any_request(argv: list[str]) -> None:
    with pytest.raises(UsageError, match="not a dns-01 TXT value"):
        parse_invocation(argv, {})
