"""Making a runner visible: a Prometheus ``/metrics`` endpoint, and status records on a compacted topic.

Every runner publishes its queries' metrics every few seconds under its worker id, so ``streamml status`` on
any machine shows every worker of the deployment, with rates, lag, model versions, refusals and errors.
A worker that stops without a clean shutdown (``kill -9``, a lost machine) leaves its last record behind; a
record older than :data:`STALE_AFTER_S` reads as not running, with the time it was last seen.
"""

from __future__ import annotations

import os
import socket
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Any

import orjson
from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric

from streamml.config import Settings
from streamml.kafka import Admin, Producer, client_config
from streamml.kafka.compacted import CompactedReader
from streamml.runtime.metrics import LATENCY_BUCKETS_MS, QueryMetrics
from streamml.runtime.topics import ensure_status_topic, status_topic

STATUS_PERIOD_S = 2.0
#: a worker silent for this long (a few heartbeats) is shown as not running
STALE_AFTER_S = 5 * STATUS_PERIOD_S


class RunnerCollector:
    """Prometheus collector over the metrics of a runner's queries."""

    def __init__(self, queries: Callable[[], list[QueryMetrics]]) -> None:
        self.queries = queries

    def collect(self) -> Iterator[Metric]:
        counters = {
            "records_in": "Records consumed", "records_out": "Records produced",
            "dead_letters": "Records sent to the dead-letter topic", "batches": "Micro-batches processed",
            "transactions": "Transactions committed",
        }  # fmt: skip
        families = {k: CounterMetricFamily(f"streamml_{k}", v, labels=["query"]) for k, v in counters.items()}
        batch = GaugeMetricFamily("streamml_batch_size", "Records in the last micro-batch", labels=["query"])
        model = CounterMetricFamily("streamml_model_seconds", "Time spent in model inference", labels=["query"])
        lag = GaugeMetricFamily("streamml_consumer_lag", "Records behind the end", labels=["query", "partition"])
        version = GaugeMetricFamily("streamml_model_version", "Model version in force", labels=["query", "model"])
        latency = HistogramMetricFamily(
            "streamml_end_to_end_latency_seconds", "Record timestamp to output produced", labels=["query"]
        )
        stages = HistogramMetricFamily(
            "streamml_stage_seconds", "Time per micro-batch in each stage of the worker loop", labels=["query", "stage"]
        )
        for m in self.queries():
            for key, family in families.items():
                family.add_metric([m.query_id], getattr(m, key))
            batch.add_metric([m.query_id], m.last_batch_size)
            model.add_metric([m.query_id], m.model_seconds)
            for partition, behind in m.lag.items():
                lag.add_metric([m.query_id, partition], behind)
            for ref, label in m.model_versions.items():
                version.add_metric([m.query_id, ref], float(label.rsplit(":", 1)[-1]))
            cumulative = m.latency.cumulative(LATENCY_BUCKETS_MS)
            buckets = [(str(b / 1000), float(c)) for b, c in zip(LATENCY_BUCKETS_MS, cumulative, strict=True)]
            buckets.append(("+Inf", float(m.latency.count)))
            latency.add_metric([m.query_id], buckets, m.latency.total_ms / 1000)
            for stage, histogram in list(m.stages.stages.items()):
                stage_buckets = [
                    (str(b / 1000), float(c)) for b, c in zip(LATENCY_BUCKETS_MS, histogram.cumulative(), strict=True)
                ]
                stage_buckets.append(("+Inf", float(histogram.count)))
                stages.add_metric([m.query_id, stage], stage_buckets, histogram.total_ms / 1000)
        yield from families.values()
        yield from (batch, model, lag, version, latency, stages)


def serve_metrics(port: int, queries: Callable[[], list[QueryMetrics]]) -> int:
    """Serve ``/metrics`` on ``port`` (0: any free port); returns the port."""
    registry = CollectorRegistry()
    registry.register(RunnerCollector(queries))
    server, _ = start_http_server(port, addr="127.0.0.1" if port == 0 else "0.0.0.0", registry=registry)
    return int(server.server_port)


class StatusPublisher:
    """Publishes this worker's status every few seconds until stopped (a null record on a clean stop);
    :meth:`start` creates the status topic if it is missing."""

    def __init__(self, settings: Settings, snapshot: Callable[[], dict[str, Any]], role: str | None = None) -> None:
        self.settings = settings
        self.config = client_config(settings)
        self.topic = status_topic(settings.service_id)
        # ``role`` tells apart two publishers of one process (a runner's queries, its monitors)
        self.key = f"{settings.worker_id}/{os.getpid()}{'/' + role if role else ''}".encode()
        self.snapshot = snapshot
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="status", daemon=True)

    def start(self) -> StatusPublisher:
        ensure_status_topic(Admin(self.config, timeout_s=self.settings.request_timeout_s), self.settings.service_id)
        self._thread.start()
        return self

    def _run(self) -> None:
        with Producer(self.config) as producer:
            while not self._stop.wait(STATUS_PERIOD_S):
                record = {
                    "worker": self.key.decode(),
                    "host": socket.gethostname(),
                    "time": time.time(),
                    **self.snapshot(),
                }
                producer.produce_batch(self.topic, [orjson.dumps(record)], [self.key])
                producer.flush()
            producer.produce_batch(self.topic, [None], [self.key])

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(10)


def read_status(settings: Settings, timeout_s: float = 10.0) -> list[dict[str, Any]]:
    """The latest status of every worker of the deployment that did not stop cleanly (none before the first
    worker started)."""
    with CompactedReader(client_config(settings), status_topic(settings.service_id), missing_ok=True) as reader:
        return [orjson.loads(v) for v in reader.catch_up(timeout_s).values()]


def is_alive(worker: dict[str, Any], now: float | None = None) -> bool:
    """Whether ``worker`` (a record of :func:`read_status`) reported within :data:`STALE_AFTER_S`."""
    return (time.time() if now is None else now) - float(worker.get("time", 0)) <= STALE_AFTER_S


def last_seen(worker: dict[str, Any], now: float | None = None) -> str:
    """When ``worker`` last reported: ``2026-01-31 12:00:00 UTC, 42 s ago``."""
    seen = float(worker.get("time", 0))
    age = (time.time() if now is None else now) - seen
    return f"{datetime.fromtimestamp(seen, UTC):%Y-%m-%d %H:%M:%S} UTC, {age:.0f} s ago"


def query_state(worker: dict[str, Any], query: dict[str, Any], now: float | None = None) -> str:
    """A query's state on ``worker`` as users see it: ``RUNNING on host/pid`` while the worker reports, else
    ``NOT RUNNING (worker host/pid last seen ...)``."""
    if not is_alive(worker, now):
        return f"NOT RUNNING (worker {worker['worker']} last seen {last_seen(worker, now)}; was {query['state']})"
    return f"{query['state']} on {worker['worker']}" + (f" ({query['error']})" if query.get("error") else "")
