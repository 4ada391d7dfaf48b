"""The hook against a real gateway (in-process, memory provider): every client end to end.

Exit 0 only when the gateway confirmed; a refusal is one line on stderr with the fix;
no secret reaches stderr, stdout or the log.
"""

from __future__ import annotations

from pathlib import Path

from providers.memory import MemoryProvider
from tests.conftest import make_value
from tests.hooks.conftest import PASSWORDS, GatewayFactory, call, hook_env, one_line

FQDN = "_acme-challenge.example.test"


async def test_mod_md_two_values_coexist_then_version_2_teardown(gateway: GatewayFactory) -> None:
    gw = await gateway()
    env = hook_env(gw.url)
    v1, v2 = make_value(), make_value()
    for value in (v1, v2):
        result = await call(["setup", "example.test", value], env)
        assert (result.status, result.stdout, result.stderr) == (0, "", "")
    assert sorted(gw.provider.values(FQDN)) == sorted([v1, v2])
    assert (await call(["teardown", "example.test", v1], env)).status == 0
    assert gw.provider.values(FQDN) == [v2]
    assert (await call(["teardown", "example.test", v2], env)).status == 0
    assert gw.provider.records == {}


async def test_mod_md_version_1_teardown_removes_every_value_this_user_set(
    gateway: GatewayFactory,
) -> None:
    gw = await gateway()
    env = hook_env(gw.url)
    v1, v2 = make_value(), make_value()
    assert (await call(["setup", "example.org", v1], env)).status == 0
    # Another user's value at the same name must survive alice's teardown.
    assert (await call(["setup", "example.org", v2], hook_env(gw.url, "bob"))).status == 0
    result = await call(["teardown", "example.org"], env)
    assert (result.status, result.stderr) == (0, "")
    assert gw.provider.values("_acme-challenge.example.org") == [v2]


async def test_certbot_auth_then_cleanup(gateway: GatewayFactory) -> None:
    gw = await gateway()
    value = make_value()
    env = hook_env(gw.url, CERTBOT_DOMAIN="example.test", CERTBOT_VALIDATION=value,
                   CERTBOT_ALL_DOMAINS="example.test,*.example.test",
                   CERTBOT_REMAINING_CHALLENGES="0")
    auth = await call([], env)
    # certbot hands the auth hook's stdout to the cleanup hook: print nothing.
    assert (auth.status, auth.stdout, auth.stderr) == (0, "", "")
    assert gw.provider.values(FQDN) == [value]
    assert (await call([], {**env, "CERTBOT_AUTH_OUTPUT": ""})).status == 0
    assert gw.provider.records == {}


async def test_dehydrated_chain_and_its_other_events(gateway: GatewayFactory) -> None:
    gw = await gateway()
    env = hook_env(gw.url)
    v1, v2 = make_value(), make_value()
    triples = ["example.test", "t1", v1, "www.example.test", "t2", v2]
    result = await call(["deploy_challenge", *triples], env)
    assert (result.status, result.stdout, result.stderr) == (0, "", "")
    assert gw.provider.values(FQDN) == [v1]
    assert gw.provider.values("_acme-challenge.www.example.test") == [v2]
    for event in ("startup_hook", "generate_csr", "deploy_cert", "exit_hook", "sync_cert",
                  "some_future_event"):
        other = await call([event, "example.test", "/x/key.pem", "/x/cert.pem"], env)
        # Whatever is printed for generate_csr would be taken as a CSR.
        assert (other.status, other.stdout, other.stderr) == (0, "", "")
    assert (await call(["clean_challenge", *triples], env)).status == 0
    assert gw.provider.records == {}


async def test_uacme_begin_done_and_decline(gateway: GatewayFactory) -> None:
    gw = await gateway()
    env = hook_env(gw.url)
    value = make_value()
    declined = await call(["begin", "http-01", "example.test", "tok", "tok.thumb"], env)
    assert declined.status != 0
    assert gw.provider.calls == []
    assert (await call(["begin", "dns-01", "example.test", "tok", value], env)).status == 0
    assert gw.provider.values(FQDN) == [value]
    assert (await call(["done", "dns-01", "example.test", "tok", value], env)).status == 0
    assert gw.provider.records == {}


async def test_lego_exec_with_a_trailing_dot(gateway: GatewayFactory) -> None:
    gw = await gateway()
    env = hook_env(gw.url)
    value = make_value()
    assert (await call(["present", "_acme-challenge.example.test.", value], env)).status == 0
    assert gw.provider.values(FQDN) == [value]
    assert (await call(["cleanup", "_acme-challenge.example.test.", value], env)).status == 0
    assert gw.provider.records == {}


async def test_a_name_the_user_may_not_change_is_one_line_with_the_fix(
    gateway: GatewayFactory,
) -> None:
    gw = await gateway()
    result = await call(["setup", "example.test", make_value()], hook_env(gw.url, "bob"))
    assert result.status == 1
    line = one_line(result.stderr)
    assert line.startswith("acmegw-hook: setup example.test: gateway answered 403: ")
    assert "is not a name you may change" in line
    assert "check the user's domains in the password file" in line
    assert gw.provider.calls == []


async def test_a_wrong_password_is_not_retried_and_not_shown(gateway: GatewayFactory) -> None:
    gw = await gateway()
    env = hook_env(gw.url, ACMEGW_PASSWORD="wrong-s3cret")
    result = await call(["setup", "example.test", make_value()], env)
    assert result.status == 1
    line = one_line(result.stderr)
    assert "gateway answered 401" in line and "ACMEGW_USER=alice" in line
    assert "wrong-s3cret" not in line


async def test_no_credentials_where_the_gateway_wants_them(gateway: GatewayFactory) -> None:
    gw = await gateway()
    env = hook_env(gw.url, ACMEGW_USER="", ACMEGW_PASSWORD="")
    line = one_line((await call(["setup", "example.test", make_value()], env)).stderr)
    assert "401" in line and "set ACMEGW_USER and ACMEGW_PASSWORD_FILE" in line


async def test_host_allowlist_without_a_password(gateway: GatewayFactory) -> None:
    gw = await gateway(BASIC_AUTH="off", ALLOWED_HOSTS="127.0.0.1")
    env = hook_env(gw.url, ACMEGW_USER="", ACMEGW_PASSWORD="")
    assert (await call(["setup", "example.test", make_value()], env)).status == 0
    refused = await gateway(BASIC_AUTH="off", ALLOWED_HOSTS="192.0.2.1")
    line = one_line((await call(["setup", "example.test", make_value()],
                                hook_env(refused.url, ACMEGW_USER="",
                                         ACMEGW_PASSWORD=""))).stderr)
    assert "403" in line and "ALLOWED_HOSTS" in line


async def test_a_provider_failure_is_retried_then_reported(gateway: GatewayFactory) -> None:
    gw = await gateway(provider=MemoryProvider())
    gw.provider.settings = type(gw.provider.settings)(fail="the DNS API said no")
    result = await call(["setup", "example.test", make_value()],
                        hook_env(gw.url, ACMEGW_TIMEOUT="2"))
    assert result.status == 1
    line = one_line(result.stderr)
    assert "gateway answered 502" in line and "the DNS API said no" in line
    assert "gave up after" in line and "check the gateway's log" in line
    assert len(gw.provider.calls) >= 2  # 5xx is retried


async def test_the_log_names_each_step_but_no_secret(gateway: GatewayFactory,
                                                    tmp_path: Path) -> None:
    gw = await gateway()
    log = tmp_path / "hook.log"
    value = make_value()
    env = hook_env(gw.url, ACMEGW_LOG=str(log))
    assert (await call(["setup", "example.test", value], env)).status == 0
    assert (await call(["renewed", "example.test"], env)).status == 0
    assert (await call(["setup", "example.test", value],
                       {**env, "ACMEGW_PASSWORD": "wrong-s3cret"})).status == 1
    text = log.read_text()
    assert "mod_md setup example.test" in text and "confirmed for _acme-challenge" in text
    assert "event renewed example.test" in text
    assert "401" in text
    for secret in (PASSWORDS["alice"], "wrong-s3cret", value):
        assert secret not in text


async def test_original_hook_settings_work_unchanged(gateway: GatewayFactory,
                                                     tmp_path: Path) -> None:
    gw = await gateway()
    log = tmp_path / "old.log"
    env = {"ACMEGW_HOOK_CONF": "", "API_URI": gw.url, "API_USER": "alice",
           "API_PASSWD": PASSWORDS["alice"], "LOGFILE": str(log), "DNS_DELAY": "0.2"}
    value = make_value()
    assert (await call(["setup", "example.test", value], env)).status == 0
    assert gw.provider.values(FQDN) == [value]
    assert "DNS_DELAY" in log.read_text()
