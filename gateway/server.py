"""``acmegw-server``: read the configuration, start the listeners, stop cleanly.

Exit status: 0 after a clean stop (SIGTERM/SIGINT let in-flight requests
finish), 2 for a configuration with problems (all listed at once), 1 when a
listener, the journal or the provider cannot be opened, or when stopping took
longer than ``STOP_TOTAL`` or left something running (the log says what).
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from typing import TYPE_CHECKING

from aiohttp import web

from gateway import checks, delegation, logsetup
from gateway.acmedns import AccountError
from gateway.app import apply_reload, create_app, load_static_accounts
from gateway.auth import PasswordStore
from gateway.config import Config, build, gather
from gateway.early_signals import EarlySignals
from gateway.errors import GatewayError
from gateway.keys import LIVE, METRICS, PROVIDER, SERVICE
from gateway.listeners import ConnectionGuard, GuardedSite, connection_budget
from gateway.shutdown import run as run_bounded
from gateway.shutdown import tasks_left
from gateway.state import describe as state_description
from gateway.tls import ReloadingTLS, TLSFilesError
from lib.passwd import PasswdFileError, UserEntry
from lib.settings import ConfigError
from providers.base import Provider, ProviderContext, ProviderError
from providers.registry import create_provider

if TYPE_CHECKING:
    from gateway.tls_acme import OwnCertificate

log = logging.getLogger("acmegw.server")

SHUTDOWN_GRACE = 30.0
# How long stopping may take in all: requests in flight (SHUTDOWN_GRACE), then
# the background tasks and the state (each bounded on its own). Past it the
# process ends anyway, saying what had not stopped.
STOP_TOTAL = SHUTDOWN_GRACE + 30.0


def prepare(
    argv: Sequence[str] | None, environ: Mapping[str, str]
) -> tuple[Config, Provider, PasswordStore | None, ReloadingTLS | None]:
    """Everything start-up needs, or :class:`ConfigError` listing every problem."""
    settings, args, config_dir = gather(argv, environ)
    config = build(settings, args, config_dir)
    context = ProviderContext(
        managed_domains=config.managed_domains,
        state_dir=config.state_dir,
        config_dir=config_dir,
        timeout=config.provider_timeout,
    )
    provider = create_provider(settings, context)
    passwords = None
    users: list[UserEntry] = []
    if config.auth.passwd_file is not None and config.auth.passwd_file.is_file():
        passwords = PasswordStore.from_config(config.auth)
        try:
            passwords.load()
            users = list(passwords.file.load().values())
        except PasswdFileError as exc:
            settings.problem(f"PASSWD_FILE: {exc}")
    try:
        load_static_accounts(config)
    except AccountError as exc:
        settings.problem(f"ACMEDNS_ACCOUNTS_FILE: {exc}")
    tls = None
    if config.tls_acme is not None and config.tls is not None:
        # The gateway's own certificate may not exist yet: it is obtained once serving.
        tls = ReloadingTLS(config.tls, awaited=True)
    elif config.tls is not None and config.tls.cert.is_file() and config.tls.key.is_file():
        try:
            tls = ReloadingTLS(config.tls)
        except TLSFilesError as exc:
            settings.problem(str(exc))
    checks.run(settings, config, users)
    if settings.problems or provider is None:
        raise ConfigError(settings.problems or ["no provider"])
    return replace(config, warnings=tuple(settings.warnings)), provider, passwords, tls


async def serve(
    config: Config,
    provider: Provider,
    passwords: PasswordStore | None,
    tls: ReloadingTLS | None,
    argv: Sequence[str] | None = None,
    early: EarlySignals | None = None,
) -> int:
    app = create_app(config, provider, passwords)
    if tls is not None:
        # Exported from the first certificate on: a gateway still waiting for its own
        # has no notAfter to alert on (acmegw_tls_acme_failures_total counts its tries).
        tls.when_loaded(
            lambda: app[METRICS].watch_certificate(lambda: tls.not_before, lambda: tls.not_after)
        )
    guard = _connection_guard(app, config, tls)
    runner = web.AppRunner(
        app,
        handle_signals=False,
        access_log=None,
        shutdown_timeout=SHUTDOWN_GRACE,
        # How long a body nobody reads may keep coming in after the answer.
        lingering_time=config.connections.body_timeout,
    )
    try:
        # Opens the journal and the provider (the builtin DNS server binds its port here).
        await runner.setup()
    except (GatewayError, ProviderError, OSError) as exc:
        log.error("cannot start: %s", exc)
        await runner.cleanup()
        return 1
    guard.handlers = runner.server
    scheme = "https" if tls else "http"
    try:
        for listener in config.listeners:
            site = GuardedSite(runner, guard, listener.host, listener.port)
            await site.start()
            log.info("listening on %s://%s (provider %s)", scheme, listener, provider.name)
    except OSError as exc:
        log.error("cannot listen: %s", exc)
        await runner.cleanup()
        return 1
    if tls is not None:
        tls.start(config.tls_reload_interval)
    own = _own_certificate(app, config, tls)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    loop.add_signal_handler(signal.SIGHUP, reload, app, argv, tls, own)
    if early is not None:
        _hand_over(early, stop, lambda: reload(app, argv, tls, own))
    print(
        f"acmegw-server: ready ({', '.join(str(lst) for lst in config.listeners)})",
        file=sys.stderr,
        flush=True,
    )
    await stop.wait()
    log.info("stopping: finishing requests in flight")

    async def stop_all() -> None:
        if own is not None:
            await own.stop()  # withdraws what it published, while the service still runs
        if tls is not None:
            await tls.stop()
        await runner.cleanup()  # stops accepting, waits for handlers, then runs cleanup_ctx

    # A task of its own, waited for with a bound: a step that swallows its
    # cancellation would hold an asyncio.timeout here for good.
    stopping = asyncio.create_task(stop_all(), name="stopping")
    await asyncio.wait([stopping], timeout=STOP_TOTAL)
    guard.close_all()
    if not stopping.done():
        log.error(
            "stopping took over %gs; exiting without waiting for: %s",
            STOP_TOTAL,
            tasks_left(loop),
        )
        return 1
    if (failure := stopping.exception()) is not None:
        log.error("stopping failed", exc_info=failure)
        return 1
    log.info("stopped")
    return 0


def _hand_over(early: EarlySignals, stop: asyncio.Event, reload: Callable[[], None]) -> None:
    """Act on the signals that came while starting, now that the loop handles them."""
    if early.stop is not None:
        log.info("%s came while starting: stopping", early.stop.name)
        stop.set()
    elif early.reload:
        log.info("SIGHUP came while starting: reading the configuration again")
        reload()


def _own_certificate(
    app: web.Application, config: Config, tls: ReloadingTLS | None
) -> OwnCertificate | None:
    """With SSL_ACME_SERVER: start obtaining and renewing the gateway's certificate.

    Started once the provider is open (the builtin DNS server answers the CA's
    queries) and the listeners are bound.
    """
    if config.tls_acme is None or tls is None:
        return None
    # Imported only here: the ACME client brings cryptography and requests, which a
    # gateway serving files of its own never needs (README "Performance").
    from gateway.tls_acme import OwnCertificate

    own = OwnCertificate(config.tls_acme, config.state_dir, app[SERVICE], tls, app[METRICS])
    own.start()
    return own


def _connection_guard(
    app: web.Application, config: Config, tls: ReloadingTLS | None
) -> ConnectionGuard:
    """The listeners' guard, fitted to the open-file limit, its middleware on *app*."""
    files, budget = connection_budget()
    wanted = config.connections.max_connections
    if wanted > budget:
        log.warning(
            "MAX_CONNECTIONS=%d does not fit in the open-file limit (%d, ulimit -n): "
            "at most %d connections are accepted; raise the limit (LimitNOFILE=) to allow more",
            wanted,
            files,
            budget,
        )
    guard = ConnectionGuard(
        app[LIVE], tls.context if tls else None, budget, tls.refusal if tls else None
    )
    app.middlewares.insert(0, guard.middleware)
    return guard


def reload(
    app: web.Application,
    argv: Sequence[str] | None,
    tls: ReloadingTLS | None,
    own: OwnCertificate | None = None,
) -> None:
    """SIGHUP: read the configuration, password file and acme-dns accounts file again
    and adopt them; with SSL_ACME_SERVER, look at the gateway's certificate now.

    A configuration with problems is refused as a whole and the running one
    stays; nothing in flight is dropped.
    """
    try:
        config, new_provider, passwords, _ = prepare(argv, os.environ)
        accounts = load_static_accounts(config)
    except ConfigError as exc:
        log.error("reload refused, keeping the running configuration: %s", "; ".join(exc.problems))
        return
    except AccountError as exc:  # the file changed again since prepare() read it
        log.error("reload refused, keeping the running configuration: %s", exc)
        return
    for warning in config.warnings:
        log.warning("%s", warning)
    pending = apply_reload(app, config, passwords, accounts)
    if tls is not None:
        tls.check()
    if own is not None:
        own.wake()

    def report(provider_problem: str | None, restart: Sequence[str] = ()) -> None:
        pending.extend(restart)
        # The provider in force may serve differently now (builtin with secondaries).
        app[SERVICE].update_propagation()
        if provider_problem is not None:
            log.error("reloaded, but the provider keeps its old settings: %s", provider_problem)
        if pending:
            log.warning("reloaded; restart to apply: %s", ", ".join(pending))
        elif provider_problem is None:
            log.info("configuration reloaded")

    # Last: a provider with new settings is opened in the background, and the report
    # waits for it, so "configuration reloaded" means every setting is in force.
    restart_only = app[PROVIDER].reload(new_provider, report)
    if restart_only is not None:
        pending.extend(restart_only)
        report(None)


def _tls_summary(config: Config) -> str:
    if config.tls is None:
        return "off (plaintext HTTP)"
    if config.tls_acme is not None:
        acme = config.tls_acme
        return (f"{config.tls.cert}, obtained from {acme.server} for "
                f"{', '.join(acme.domains)} (SSL_ACME_SERVER)")
    return str(config.tls.cert)


def summary(config: Config, provider: Provider) -> str:
    lines = [
        f"listeners:   {', '.join(str(lst) for lst in config.listeners)}",
        f"tls:         {_tls_summary(config)}",
        f"auth:        BASIC_AUTH={config.auth.mode.value}, "
        f"{len(config.auth.allowed_hosts)} allowed host networks",
        f"domains:     {', '.join(config.managed_domains)}",
        f"provider:    {provider.label}",
        f"state:       {state_description(config)}",
        f"propagation: {'authoritative' if config.propagation.check else 'off'}",
    ]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None, early: EarlySignals | None = None) -> int:
    """*early*: the signals caught since the process started (gateway.__main__);
    caught from here on without it."""
    with early or EarlySignals.catch() as signals:
        return _start(argv, signals)


def _start(argv: Sequence[str] | None, signals: EarlySignals) -> int:
    try:
        config, provider, passwords, tls = prepare(argv, os.environ)
    except ConfigError as exc:
        print(
            f"acmegw-server: the configuration has {len(exc.problems)} problem(s):", file=sys.stderr
        )
        for problem in exc.problems:
            print(f"  - {problem}", file=sys.stderr)
        return 2
    if config.check_delegation is not None or config.check_only:
        # A check reloads nothing and stops as any command does.
        signals.release(replay=True)
    if config.check_delegation is not None:
        # The report is the output; the log says only what goes wrong (or everything).
        logsetup.configure("DEBUG" if config.log_level == "DEBUG" else "WARNING", "text")
        for warning in config.warnings:
            print(f"acmegw-server: warning: {warning}", file=sys.stderr)
        return delegation.main(config.check_delegation, config, provider)
    logsetup.configure(config.log_level, config.log_format)
    if config.check_only:
        print("configuration OK\n" + summary(config, provider))
        for warning in config.warnings:
            print(f"acmegw-server: warning: {warning}", file=sys.stderr)
        return 0
    for warning in config.warnings:
        log.warning("%s", warning)
    if signals.stop is not None:
        log.info("%s came while starting: stopped before serving", signals.stop.name)
        return 0
    log.info("starting: provider %s", provider.label)
    return run_bounded(serve(config, provider, passwords, tls, argv, signals))


if __name__ == "__main__":
    sys.exit(main())
