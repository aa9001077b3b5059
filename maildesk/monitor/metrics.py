"""The daemon's metrics for Prometheus (GET /metrics), in a registry of the daemon's own.

Two kinds. What happens in this process is counted where it happens, after its
transaction commits: the ingest worker's and the IMAP pollers' batches (mail taken by
source and verdict, tickets opened, batch durations) and the outbox worker's deliveries
(results and latency, queued to sent). These start at zero with the process, as
Prometheus counters do. What the desk holds (queues, quarantine, outbox, SLA breaches,
IMAP mailboxes) is read from the database at scrape time (health.figures: indexed
queries), within monitor.timeout seconds; a scrape whose reading fails or takes longer
says maildesk_database_up 0 and leaves those figures out rather than hang.
"""
from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timezone
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from sqlalchemy import Engine

from ..notify.delivery import RunResult
from ..pipeline.driver import Summary
from .health import figures, within

# seconds: a mail sent at once, within the relay's retries, or after hours of backoff
LATENCY_BUCKETS = (0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600, 4 * 3600, 24 * 3600)
BATCH_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)


class DatabaseFigures(Collector):
    """The gauges read from the database at scrape time."""

    def __init__(self, engine: Engine, timeout: float) -> None:
        self.engine = engine
        self.timeout = timeout

    def _read(self) -> dict[str, Any]:
        with self.engine.connect() as conn:
            return figures(conn, datetime.now(timezone.utc))

    def describe(self) -> list[Metric]:
        return []                  # registering must not read the database

    def collect(self) -> Iterator[Metric]:
        got = within(self.timeout, {"figures": self._read})["figures"]
        up = GaugeMetricFamily("maildesk_database_up", "1 when the scrape could read the "
                                                       "desk's figures from the database.")
        up.add_metric([], 0 if isinstance(got, BaseException) else 1)
        yield up
        if isinstance(got, BaseException):
            return
        f: dict[str, Any] = got
        yield GaugeMetricFamily("maildesk_inbound_queue_depth", "Mail waiting in the inbound "
                                "queue for the ingest worker.", value=f["inbound_queued"])
        yield GaugeMetricFamily("maildesk_inbound_oldest_age_seconds", "How long the oldest "
                                "mail in the inbound queue has waited (0: none waits).",
                                value=f["inbound_oldest_s"])
        yield GaugeMetricFamily("maildesk_quarantine_size", "Mail held in quarantine.",
                                value=f["quarantined"])
        outbox = GaugeMetricFamily("maildesk_outbox_mails", "Outbox mail not sent, by status: "
                                   "queued, retrying (after a transient failure), sending (claimed "
                                   "by a sender, its result not recorded yet), failed.",
                                   labels=["status"])
        for status in ("queued", "retrying", "sending", "failed"):
            outbox.add_metric([status], f[f"outbox_{status}"])
        yield outbox
        breached = GaugeMetricFamily("maildesk_sla_breached_clocks", "SLA clocks still "
                                     "running past their target, by kind.", labels=["kind"])
        for kind, n in sorted(f["sla_breached"].items()):
            breached.add_metric([kind], n)
        yield breached
        connected = GaugeMetricFamily("maildesk_imap_connected", "1 while the mailbox's "
                                      "poller is connected.", labels=["mailbox"])
        success = GaugeMetricFamily("maildesk_imap_last_success_timestamp_seconds",
                                    "When the mailbox was last drained (unix time).",
                                    labels=["mailbox"])
        for box, state in sorted(f["imap"].items()):
            connected.add_metric([box], 1 if state["connected"] else 0)
            if state["last_success_at"] is not None:
                success.add_metric([box], state["last_success_at"].timestamp())
        yield connected
        yield success


class Metrics:
    """The registry /metrics shows, and the counters the daemon's workers move."""

    def __init__(self, engine: Engine, timeout: float) -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        self.taken = Counter("maildesk_mail_taken", "Mail the pipeline took, by source "
                             "(smtp, imap, pipe) and verdict (the state it was left in).",
                             ["source", "verdict"], registry=self.registry)
        self.opened = Counter("maildesk_tickets_opened", "Tickets opened by mail.",
                              registry=self.registry)
        self.batches = Histogram("maildesk_batch_duration_seconds", "Seconds a worker took "
                                 "for the mail it found waiting (one or more batches, each "
                                 "a transaction), by worker (ingest, imap).",
                                 ["worker"], buckets=BATCH_BUCKETS, registry=self.registry)
        self.deliveries = Counter("maildesk_deliveries", "Delivery attempts of outbox mail, "
                                  "by result (sent, deferred, failed).", ["result"],
                                  registry=self.registry)
        self.latency = Histogram("maildesk_delivery_latency_seconds", "Seconds from a mail "
                                 "queued in the outbox to sent.", buckets=LATENCY_BUCKETS,
                                 registry=self.registry)
        self.registry.register(DatabaseFigures(engine, timeout))

    def batch(self, worker: str, seconds: float, summary: Summary) -> None:
        """A batch the ingest worker or a poller committed (nothing when it took no mail)."""
        if not summary.taken:
            return
        self.batches.labels(worker).observe(seconds)
        for (source, verdict), n in summary.taken.items():
            self.taken.labels(source, verdict).inc(n)
        self.opened.inc(summary.new_tickets)

    def delivered(self, result: RunResult) -> None:
        for name in ("sent", "deferred", "failed"):
            if getattr(result, name):
                self.deliveries.labels(name).inc(getattr(result, name))
        for seconds in result.latencies:
            self.latency.observe(seconds)

    def exposition(self) -> bytes:
        return generate_latest(self.registry)
