"""Prometheus metrics (prometheus-client): counts and latencies only, never PHI.

One registry per running service, so tests and benchmarks can run several side by side.
Gauges that mirror the database (pending work, outbox depth, documents owed and dead-lettered)
are read at scrape time.
"""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

STAGE_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
CONTENT_TYPE = CONTENT_TYPE_LATEST


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.stage_seconds = Histogram(
            "appliance_stage_seconds",
            "Time spent in each pipeline stage per image",
            ["stage"],
            buckets=STAGE_BUCKETS,
            registry=r,
        )
        self.captures = Counter(
            "appliance_captures_total", "Images stored, by capture path", ["source"], registry=r
        )
        self.refused = Counter(
            "appliance_refused_total",
            "Inputs refused, by capture path and reason",
            ["source", "reason"],
            registry=r,
        )
        self.identity_conflicts = Counter(
            "appliance_identity_conflicts_total",
            "Images stored under a Patient ID already held with another name, birth date or sex",
            ["source"],
            registry=r,
        )
        self.analysed = Counter(
            "appliance_images_analysed_total",
            "Images through the pipeline, by gradability and screening status",
            ["gradable", "screening"],
            registry=r,
        )
        self.outcomes = Counter(
            "appliance_visit_outcomes_total",
            "Visit outcomes decided, by code",
            ["code"],
            registry=r,
        )
        self.models = Info(
            "appliance_models", "Screening models loaded and the provider in use", registry=r
        )
        self._pending = Gauge(
            "appliance_pending_analysis", "Captures waiting for the pipeline", registry=r
        )
        self._outbox = Gauge(
            "appliance_outbox_depth", "Outbox jobs queued or in flight", registry=r
        )

        self._documents_due = Gauge(
            "appliance_documents_due",
            "Result documents (SR, PDF, heatmap SC) visits still owe, waiting to be built",
            registry=r,
        )
        self._documents_dead = Gauge(
            "appliance_documents_dead",
            "Result documents that could not be built after every try (dead-lettered)",
            registry=r,
        )

    def bind(self, pending: Callable[[], float], outbox: Callable[[], float]) -> None:
        self._pending.set_function(pending)
        self._outbox.set_function(outbox)

    def bind_documents(self, counts: Callable[[], dict[str, int]]) -> None:
        """Owed and dead-lettered documents, read from the store at scrape time."""
        self._documents_due.set_function(lambda: float(counts()["due"]))
        self._documents_dead.set_function(lambda: float(counts()["dead"]))

    def exposition(self) -> bytes:
        return generate_latest(self.registry)
