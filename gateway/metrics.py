"""Prometheus metrics, on a registry of the app's own (no process-wide globals).

Served at ``/metrics`` to authenticated callers or allowed hosts: requests by
API and result, authentication failures, provider call latency, propagation
wait time, the journal's size and oldest record, the janitor's removals and
failures, and the validity of the gateway's own TLS certificate.
``contrib/prometheus/`` holds alerting and recording rules built on these
names; ``tests/contrib/test_prometheus.py`` checks them against a running
gateway's ``/metrics``.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from gateway.errors import GatewayError

_LATENCY = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)

CONTENT_TYPE = CONTENT_TYPE_LATEST

# The label values the service uses. Each series is exported (at zero) from the
# start: a series that first appears with the value 1 shows no increase() to
# Prometheus, so an alert on the first provider failure would never fire.
PROVIDER_OPERATIONS = ("add_txt", "remove_txt")
RESULTS = ("ok", "error", "timeout")


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self._journal_figures: Callable[[], Awaitable[tuple[int, float]]] | None = None
        self.requests = Counter(
            "acmegw_requests",
            "Requests answered, by API and HTTP status.",
            ["api", "status"],
            registry=self.registry,
        )
        self.auth_failures = Counter(
            "acmegw_auth_failures",
            "Refused authentication attempts, by reason.",
            ["reason"],
            registry=self.registry,
        )
        self.provider_seconds = Histogram(
            "acmegw_provider_seconds",
            "Duration of DNS provider calls.",
            ["operation", "result"],
            buckets=_LATENCY,
            registry=self.registry,
        )
        self.propagation_seconds = Histogram(
            "acmegw_propagation_seconds",
            "Time from provider success to served everywhere.",
            ["result"],
            buckets=_LATENCY,
            registry=self.registry,
        )
        for result in RESULTS:
            self.propagation_seconds.labels(result)
            for operation in PROVIDER_OPERATIONS:
                self.provider_seconds.labels(operation, result)
        self.janitor_removals = Counter(
            "acmegw_janitor_removals",
            "Stale records removed by the janitor.",
            registry=self.registry,
        )
        self.janitor_failures = Counter(
            "acmegw_janitor_failures",
            "Stale records the janitor failed to remove (tried again next round), "
            "and rounds that could not read the journal.",
            registry=self.registry,
        )
        self.journal_records = Gauge(
            "acmegw_journal_records",
            "Records in the journal (published, not torn down).",
            registry=self.registry,
        )
        self.journal_oldest_age = Gauge(
            "acmegw_journal_oldest_record_age_seconds",
            "Age of the oldest journaled record (0 when the journal is empty).",
            registry=self.registry,
        )
        self.record_max_age = Gauge(
            "acmegw_record_max_age_seconds",
            "RECORD_MAX_AGE: records older than this are removed by the janitor.",
            registry=self.registry,
        )
        self.janitor_interval = Gauge(
            "acmegw_janitor_interval_seconds",
            "JANITOR_INTERVAL: time between the janitor's rounds.",
            registry=self.registry,
        )

    def watch_journal(self, figures: Callable[[], Awaitable[tuple[int, float]]]) -> None:
        """Read the journal's size and oldest age with *figures* at every :meth:`render`
        (a database query cannot run inside a collector)."""
        self._journal_figures = figures

    def watch_janitor(self, max_age: Callable[[], float], interval: Callable[[], float]) -> None:
        self.record_max_age.set_function(max_age)
        self.janitor_interval.set_function(interval)

    def watch_certificate(
        self, not_before: Callable[[], float], not_after: Callable[[], float]
    ) -> None:
        """Export the served certificate's validity (only with TLS on: no zero to alert on)."""
        Gauge(
            "acmegw_tls_certificate_not_before_timestamp_seconds",
            "Start of the served TLS certificate's validity (notBefore), in Unix time.",
            registry=self.registry,
        ).set_function(not_before)
        Gauge(
            "acmegw_tls_certificate_not_after_timestamp_seconds",
            "When the served TLS certificate expires (notAfter), in Unix time.",
            registry=self.registry,
        ).set_function(not_after)

    def acme_failures(self) -> Counter:
        """Count the failed attempts at the gateway's own certificate (SSL_ACME_SERVER only)."""
        return Counter(
            "acmegw_tls_acme_failures",
            "Attempts to obtain or renew the gateway's own TLS certificate from its ACME CA "
            "that failed (each is tried again, with a growing wait).",
            registry=self.registry,
        )

    async def render(self) -> bytes:
        if self._journal_figures is not None:
            try:
                count, oldest_age = await self._journal_figures()
            except GatewayError:
                pass  # the journal's figures stay as last read; /healthz tells it is down
            else:
                self.journal_records.set(count)
                self.journal_oldest_age.set(oldest_age)
        return generate_latest(self.registry)
