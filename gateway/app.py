"""The aiohttp application: ``create_app(config, provider)`` builds it without I/O.

Resources (the state layer, provider connections or servers, janitor) are opened and
closed in ``cleanup_ctx``; state lives on the app under typed keys
(:mod:`gateway.keys`). The endpoints and who may call each are one table
(:mod:`gateway.routes`), applied by one middleware. Handlers raise
:class:`gateway.errors.GatewayError`; :func:`error_middleware` is the only
place that turns errors into answers.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Callable

from aiohttp import web

from gateway.acmedns import (
    Account,
    AccountError,
    AccountStore,
    account_name_allowed,
    load_accounts_file,
)
from gateway.auth import Authenticator, PasswordStore
from gateway.config import Config
from gateway.errors import GatewayError, MethodNotAllowed, NotFound, PayloadTooLarge
from gateway.janitor import Janitor
from gateway.keys import (
    ACCOUNTS,
    AUTHENTICATOR,
    CONFIG,
    JANITOR,
    JOURNAL,
    LIVE,
    METRICS,
    PROVIDER,
    REFUSALS,
    SERVICE,
    STATE,
)
from gateway.live import Live, LiveProvider
from gateway.metrics import Metrics
from gateway.refusals import REFUSED, RefusalAudit, refusal
from gateway.routes import access_middleware, add_routes, endpoint_of, endpoints
from gateway.service import ChallengeService
from gateway.state import state_for
from providers.base import Provider

log = logging.getLogger(__name__)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def error_response(exc: GatewayError) -> web.Response:
    return web.json_response(
        {"error": exc.code, "message": exc.message}, status=exc.status, headers=exc.headers
    )


@web.middleware
async def metrics_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    response = await handler(request)  # errors are answers by now (inner middleware)
    endpoint = endpoint_of(request)
    if endpoint is not None and endpoint.api is not None:
        request.app[METRICS].requests.labels(endpoint.api, str(response.status)).inc()
    return response


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        response = await handler(request)
    except GatewayError as exc:
        response = error_response(exc)
        if exc.status in REFUSED:
            auth = request.app[AUTHENTICATOR].config
            request.app[REFUSALS].refused(refusal(request, exc, auth))
        elif exc.status >= 500 and exc.detail:
            # What the answer left out for the caller: the operator's to read.
            log.warning("%s %s answered %d: %s", request.method, request.path, exc.status,
                        exc.detail)
    except web.HTTPMethodNotAllowed as exc:
        response = error_response(MethodNotAllowed(sorted(exc.allowed_methods)))
    except web.HTTPNotFound:
        response = error_response(NotFound("no such resource"))
    except web.HTTPRequestEntityTooLarge:
        response = error_response(PayloadTooLarge("body too large"))
    except web.HTTPException as exc:
        response = web.json_response(
            {"error": exc.reason.lower().replace(" ", "_"), "message": exc.reason},
            status=exc.status,
        )
    except Exception:
        log.exception("unexpected error in %s %s", request.method, request.path)
        response = web.json_response(
            {"error": "internal_error", "message": "internal error; see the gateway log"},
            status=500,
        )
    # Answers carry names and outcomes, never anything a cache should keep.
    response.headers.setdefault("Cache-Control", "no-store")
    return response


def create_app(
    config: Config,
    provider: Provider,
    passwords: PasswordStore | None = None,
) -> web.Application:
    """The gateway application. *passwords* may be pre-loaded by the caller."""
    app = web.Application(
        middlewares=[metrics_middleware, error_middleware, access_middleware],
        client_max_size=config.max_body,
    )
    state = state_for(config)
    journal = state.journal
    if passwords is None and config.auth.passwd_file is not None:
        passwords = PasswordStore.from_config(config.auth)
    live_provider = LiveProvider(provider)  # a reload may put another instance in force
    service = ChallengeService(
        live_provider,
        state,
        config.managed_domains,
        config.propagation,
        config.provider_timeout,
        delegations=config.delegations,
        max_records=config.max_records_per_user,
    )
    app[CONFIG] = config
    app[LIVE] = Live(config)
    metrics = Metrics()
    metrics.watch_journal(journal.figures)
    app[METRICS] = metrics
    service.metrics = metrics
    app[PROVIDER] = live_provider
    app[STATE] = state
    app[JOURNAL] = journal
    app[SERVICE] = service
    accounts = AccountStore(state.accounts)
    app[ACCOUNTS] = accounts
    authenticator = Authenticator(config.auth, passwords, accounts=accounts)
    authenticator.on_failure = lambda reason: metrics.auth_failures.labels(reason).inc()
    app[AUTHENTICATOR] = authenticator
    app[REFUSALS] = RefusalAudit()
    janitor = app[JANITOR] = Janitor(service, config.record_max_age, config.janitor_interval)
    metrics.watch_janitor(lambda: janitor.max_age, lambda: janitor.interval)
    app.cleanup_ctx.append(_resources)
    app.on_cleanup.append(_flush_refusals)
    add_routes(app, endpoints(config))
    return app


async def _resources(app: web.Application) -> AsyncIterator[None]:
    # The password file needs no opening: the store reads it on first use and
    # whenever it changes.
    state, provider, janitor = app[STATE], app[PROVIDER], app[JANITOR]
    await state.open()
    log.info("state: %s", state.description)
    try:
        app[ACCOUNTS].set_static(load_static_accounts(app[CONFIG]))
        provider.keep_records_in(state.records)
        await provider.open()
        try:
            if provider.volatile:
                await _replay(app[SERVICE], provider)
            janitor.start()
            yield
        finally:
            await janitor.stop()
            await app[SERVICE].aclose()
            await provider.aclose()
    finally:
        await state.close()
        # The store in use now: a reload may have replaced the one we started with.
        passwords = app[AUTHENTICATOR].passwords
        if passwords is not None:
            passwords.close()


async def _flush_refusals(app: web.Application) -> None:
    """Say what the refusal audit suppressed before the process goes."""
    app[REFUSALS].flush()


async def _replay(service: ChallengeService, provider: Provider) -> None:
    """Give a provider that forgets on restart the values still journaled.

    Each under its name's lock, read again there: another replica may be
    tearing one down meanwhile, and a value put back after its teardown would
    be served with nothing left in the journal to remove it.
    """
    replayed = 0
    for record in await service.journal.all():
        async with service.locks.hold(record.fqdn) as journal:
            now = await journal.record(record.fqdn, record.value)
            if now is None or now.state == "removing":
                continue
            await provider.add_txt(record.fqdn, record.value)
            replayed += 1
    if replayed:
        log.info("re-published %d journaled values", replayed)


def load_static_accounts(config: Config) -> list[Account]:
    """Pre-registered acme-dns accounts, each checked to write only where it may.

    Raises :class:`AccountError` naming the bad entry.
    """
    acme = config.acmedns
    if acme.accounts_file is None:
        return []
    accounts = load_accounts_file(acme.accounts_file, dict(config.delegations))
    targets = [t for _, t in config.delegations]
    for account in accounts:
        if not account_name_allowed(account.fqdn, acme.zone, config.managed_domains, targets):
            raise AccountError(
                f"{acme.accounts_file}: account {account.username} would write {account.fqdn}, "
                "outside ACMEDNS_ZONE, DELEGATIONS and the managed domains"
            )
    return accounts


def apply_reload(
    app: web.Application,
    config: Config,
    passwords: PasswordStore | None,
    static_accounts: list[Account],
) -> list[str]:
    """Adopt a newly read configuration (SIGHUP) without dropping requests.

    Returns the settings that only a restart can change. Requests in flight
    finish with the settings they started with; the next ones see the new.
    *static_accounts* replace the pre-registered acme-dns accounts: one taken
    out of the file is refused from now on.
    """
    pending = app[LIVE].replace(config)
    app[ACCOUNTS].set_static(static_accounts)
    live = app[LIVE].config
    auth = app[AUTHENTICATOR]
    auth.config = live.auth
    auth.limiter.limit = live.auth.max_failures
    auth.limiter.window = live.auth.failure_window
    if passwords is not None:
        old = auth.passwords
        auth.passwords = passwords
        if old is not None and old is not passwords:
            old.close(cancel=False)  # checks in flight finish on the old store
    service = app[SERVICE]
    service.managed_domains = live.managed_domains
    service.set_delegations(live.delegations)
    service.propagation = live.propagation
    service.provider_timeout = live.provider_timeout
    service.max_records = live.max_records_per_user
    service.update_propagation()
    janitor = app[JANITOR]
    janitor.max_age = live.record_max_age
    janitor.interval = live.janitor_interval
    logging.getLogger().setLevel(live.log_level)
    return pending
