"""Prometheus metrics, on a registry of the app's own (no process-wide globals).

Served at ``/metrics`` to authenticated callers or allowed hosts: requests by
API and result, authentication failures, provider call latency, propagation
wait time, journal size and janitor removals.
"""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

_LATENCY = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)

CONTENT_TYPE = CONTENT_TYPE_LATEST


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
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
        self.janitor_removals = Counter(
            "acmegw_janitor_removals",
            "Stale records removed by the janitor.",
            registry=self.registry,
        )
        self.journal_records = Gauge(
            "acmegw_journal_records",
            "Records in the journal (published, not torn down).",
            registry=self.registry,
        )

    def watch_journal(self, count: Callable[[], int]) -> None:
        self.journal_records.set_function(lambda: float(count()))

    def render(self) -> bytes:
        return generate_latest(self.registry)
