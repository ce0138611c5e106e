"""Runs a monitor on Kafka: read predictions and labels, join them by window, publish metrics and alerts.

One worker reads both input topics in one consumer group (``streamml-monitor-<service>-<name>``), projects each
batch through the monitor's SQL (:func:`streamml.monitor.spec.plan_inputs`), feeds a
:class:`~streamml.monitor.labeljoin.LabelJoin`, and, as windows complete and settle, publishes drift alerts
at once and one metrics record per model version and window (with quality alerts) when the labels are in.

Exactly-once: metrics, alerts, the state's changes and the consumed offsets commit in one Kafka transaction
(transactional id ``streamml-monitor-<service>-<name>``: a second worker fences the first). The state goes to
a compacted changelog as append-only segments (the predictions and labels added since the last commit, as
Arrow IPC) plus one ``meta`` record (watermarks, alert state, drift of windows still waiting for labels, the
live segments); a segment whose rows have all left memory is tombstoned. A restarted worker reads the
changelog back and carries on from the committed offsets, so nothing is counted twice or lost. A monitor's
windows span every partition of its inputs, so it runs as one worker: run it once per deployment.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import orjson
import pyarrow as pa
from pyarrow import ipc

from streamml.config import Settings
from streamml.errors import ModelError, StreamMLError
from streamml.kafka import Admin, BatchConsumer, RecordBatch, TransactionalProducer, client_config
from streamml.kafka.compacted import CompactedReader
from streamml.models.card import ModelCard
from streamml.models.registry import Registry
from streamml.monitor.alerts import Alert, Alerter
from streamml.monitor.health import QueryHealth
from streamml.monitor.labeljoin import NO_TIME, LabelJoin, Window
from streamml.monitor.report import window_drift, window_metrics
from streamml.monitor.spec import MonitorInputs, MonitorSpec, plan_inputs
from streamml.runtime.codec import SourceCodec
from streamml.runtime.topics import ensure_monitor_topics
from streamml.sql import SqlEngine

log = logging.getLogger(__name__)

#: how often the worker commits while records keep coming
COMMIT_INTERVAL_S = 1.0
MAX_BATCH = 20_000
_META = b"meta"


def monitor_group(service: str, name: str) -> str:
    """Consumer group (and transactional id) of monitor ``name`` in deployment ``service``."""
    return f"streamml-monitor-{service}-{name}"


@dataclass
class MonitorStats:
    """What a worker has done, for logs, tests and Prometheus."""

    records_in: int = 0
    windows: int = 0
    alerts: int = 0
    commits: int = 0
    restored_rows: int = 0
    #: input records that could not be decoded (logged, not counted)
    undecodable: int = 0
    last_metrics: dict[int, dict[str, Any]] = field(default_factory=dict)
    #: the latest metrics records published, oldest first
    history: deque[dict[str, Any]] = field(default_factory=lambda: deque(maxlen=1000))


class MonitorWorker:
    """Runs monitor ``spec`` until ``stop`` is set (see the module docstring)."""

    def __init__(
        self,
        spec: MonitorSpec,
        settings: Settings,
        engine: SqlEngine,
        *,
        registry: Registry | None = None,
        on_alert: Callable[[Alert], None] | None = None,
    ) -> None:
        self.spec = spec
        self.settings = settings
        self.registry = registry or Registry(settings.registry_root)
        self._cards: dict[int, ModelCard | None] = {}
        card = self._latest_card()
        self.inputs: MonitorInputs = plan_inputs(spec, engine, card)
        self.codecs = {
            self.inputs.predictions_source.topic: SourceCodec(self.inputs.predictions_source, settings),
            self.inputs.labels_source.topic: SourceCodec(self.inputs.labels_source, settings),
        }
        self.projections = {
            self.inputs.predictions_source.topic: self.inputs.predictions_plan.executor(),
            self.inputs.labels_source.topic: self.inputs.labels_plan.executor(),
        }
        scoring = [q for q, plan in engine.queries.items()
                   if plan.sink is not None and plan.sink.name.upper() == spec.predictions.upper()]  # fmt: skip
        self.health = QueryHealth(settings, scoring)
        self.join = LabelJoin(spec.window_ms, spec.within_ms, spec.grace_ms)
        self.alerter = Alerter(spec.alert_rules())
        self.on_alert = on_alert
        #: drift of complete windows waiting to settle: window start -> version -> drift
        self.drift: dict[int, dict[int, dict[str, Any]]] = {}
        self.stats = MonitorStats()
        self._segments: dict[str, int] = {}  # live changelog segment key -> the bound that retires it
        self._sequence = 0
        self.config = client_config(settings)
        self.consumer: BatchConsumer | None = None
        self.producer: TransactionalProducer | None = None
        self.changelog = ""
        self._pending: dict[tuple[str, int], int] = {}
        self._opened = 0.0
        self._assigned = threading.Event()
        self._started = time.monotonic()
        #: (topic, partition) -> the largest record timestamp read from it
        self._seen: dict[tuple[str, int], int] = {}

    # -- status ---------------------------------------------------------------------------------------------
    @property
    def query_id(self) -> str:
        """How ``SHOW QUERIES`` and ``streamml status`` name this monitor."""
        return "MONITOR_" + self.spec.name.upper().replace("-", "_")

    def describe(self) -> str:
        """One line saying what the monitor joins, for ``SHOW QUERIES``."""
        s = self.spec
        return (f"MONITOR {s.name} ({s.role}) OF MODEL '{s.model}': {s.predictions} JOIN {s.labels} ON "
                f"{s.key}{'' if s.label_key is None else ' = ' + s.label_key} WITHIN {s.within_ms} MS, "
                f"WINDOW TUMBLING {s.window_ms} MS")  # fmt: skip

    def snapshot(self, state: str = "RUNNING", error: str | None = None) -> dict[str, Any]:
        """The worker's status record, shaped as a query's (see ``QueryMetrics.snapshot``)."""
        elapsed = max(time.monotonic() - self._started, 1e-9)
        latest = max(self.stats.last_metrics, default=None)
        versions = {} if latest is None else {self.spec.model: f"{self.spec.model}:{latest}"}
        return {
            "query": self.query_id, "state": state, "error": error, "statement": self.describe(),
            "sink": self.spec.metrics_topic, "records_in": self.stats.records_in, "records_out": self.stats.windows,
            "dead_letters": self.stats.undecodable, "rate_in": round(self.stats.records_in / elapsed, 1),
            "lag": {}, "model_versions": versions, "alerts": self.stats.alerts, "held_rows": self.join.rows,
        }  # fmt: skip

    # -- cards ----------------------------------------------------------------------------------------------
    def _latest_card(self) -> ModelCard | None:
        try:
            return self.registry.get(self.spec.model).card
        except (ModelError, StreamMLError):
            return None

    def card_of(self, version: int) -> ModelCard | None:
        if version not in self._cards:
            try:
                self._cards[version] = self.registry.get(f"{self.spec.model}:{version}").card
            except (ModelError, StreamMLError):
                self._cards[version] = None
        return self._cards[version]

    # -- lifecycle ------------------------------------------------------------------------------------------
    def open(self) -> None:
        admin = Admin(self.config, timeout_s=self.settings.request_timeout_s)
        self.changelog = ensure_monitor_topics(admin, self.settings, self.spec.name, self.spec.metrics_topic,
                                               self.spec.alerts_topic)  # fmt: skip
        group = monitor_group(self.settings.service_id, self.spec.name)
        self.producer = TransactionalProducer(self.config, group, {"message.max.bytes": 64 * 1024 * 1024})
        self._restore()
        self.health.start()
        self.consumer = BatchConsumer(self.config, list(self.codecs), group_id=group, start=self.spec.start,
                                      isolation="read_committed", on_assign=lambda _: self._assigned.set())  # fmt: skip

    @property
    def assigned(self) -> bool:
        """Whether the worker has been given its input partitions (it reads from there on); safe to ask from
        another thread (the consumer itself is not)."""
        return self._assigned.is_set()

    def run(self, stop: threading.Event) -> None:
        """Process until ``stop``; commits what it processed before returning."""
        self.open()
        try:
            while not stop.is_set():
                self.step()
            self.commit()
        finally:
            self.close()

    def close(self) -> None:
        self.health.stop()
        if self.consumer is not None:
            self.consumer.close()
            self.consumer = None
        if self.producer is not None:
            self.producer.close(10.0)
            self.producer = None

    # -- one step -------------------------------------------------------------------------------------------
    def step(self, timeout_s: float = 0.2) -> int:
        """Poll, process and (when due) commit one batch; returns the records read."""
        assert self.consumer is not None and self.producer is not None
        batch = self.consumer.poll_batch(MAX_BATCH, timeout_s)
        if len(batch):
            self._begin()
            self._absorb(batch)
            self._pending.update(batch.next_offsets())
            self.stats.records_in += len(batch)
        if len(batch) or self.join.rows:
            predictions, _ = self._mark(self.inputs.predictions_source.topic)
            labels, labels_idle = self._mark(self.inputs.labels_source.topic)
            self._publish(self.join.complete(predictions), self.join.settle(labels_idle, predictions, labels))
        if self.producer.in_transaction and (not len(batch) or time.monotonic() - self._opened >= COMMIT_INTERVAL_S):
            self.commit()
        return len(batch)

    def _begin(self) -> None:
        assert self.producer is not None
        if not self.producer.in_transaction:
            self.producer.begin()
            self._opened = time.monotonic()

    def _absorb(self, batch: RecordBatch) -> None:
        names = np.asarray(batch.topics, dtype=object)
        for topic in self.codecs:  # the largest timestamp read per partition: the event-time marks
            mine = names == topic
            for partition in np.unique(batch.partitions[mine]):
                latest = int(batch.timestamps[mine & (batch.partitions == partition)].max())
                key = (topic, int(partition))
                self._seen[key] = max(self._seen.get(key, latest), latest)
        for topic, codec in self.codecs.items():
            rows = np.flatnonzero(names == topic)
            if not len(rows):
                continue
            part = batch.take(rows) if len(rows) < len(batch) else batch
            decoded = codec.decode(part)
            if decoded.failures:
                self.stats.undecodable += len(decoded.failures)
                log.warning("monitor %s: %d record(s) of %s could not be decoded; not counted", self.spec.name,
                            len(decoded.failures), topic)  # fmt: skip
            if decoded.table.num_rows == 0:
                continue
            result = self.projections[topic].execute(decoded.table, decoded.meta)
            if topic == self.inputs.predictions_source.topic:
                self.join.add_predictions(result.table)
            if topic == self.inputs.labels_source.topic:
                self.join.add_labels(result.table)

    def _mark(self, topic: str) -> tuple[int | None, bool]:
        """How far ``topic`` has been read in event time, and whether the reader stands at its end.

        Records are ordered only within a partition: the mark is the smallest, over the partitions not read
        to their end, of the largest timestamp read from each (NO_TIME while one of them has given nothing yet).
        A partition read to its end holds nothing back; when all are, the topic is idle (and the mark None:
        no limit beyond what was read).
        """
        assert self.consumer is not None
        marks: list[int] = []
        for tp in self.consumer.positions():
            if tp.topic != topic:
                continue
            low, high = self.consumer.raw.get_watermark_offsets(tp, cached=True)
            if high >= 0 and (low == high or tp.offset >= high):
                continue  # read to its end, or empty
            marks.append(self._seen.get((topic, tp.partition), NO_TIME))
        if not marks:
            return None, True
        return min(marks), False

    def _publish(self, complete: list[Window], settled: list[Window]) -> None:
        """Drift (and its alerts) of complete windows; metrics (quality, and the scoring queries' latency and
        dead-letter rate) and their alerts of settled ones."""
        assert self.producer is not None
        alerts: list[Alert] = []
        for window in complete:
            drift = window_drift(window, self.inputs.features, self.card_of)
            self.drift[window.start_ms] = drift
            for version, found in drift.items():
                values = {k: v for k, v in found.items() if k not in ("features", "score")}
                alerts += self.alerter.observe(self.spec.model, version, window.start_ms, window.end_ms, values)
        records: list[dict[str, Any]] = []
        for window in settled:
            known = self.drift.pop(window.start_ms, None) or window_drift(window, self.inputs.features, self.card_of)
            reported = [{**r, **self.health.latest()} for r in window_metrics(self.spec, window, known, self.card_of)]
            records += reported
            for record in reported:
                quality = {k: v for k, v in record.items() if isinstance(v, float) and not k.startswith("drift")}
                alerts += self.alerter.observe(self.spec.model, record["version"], window.start_ms, window.end_ms,
                                               quality)  # fmt: skip
        if records or alerts:
            self._begin()
        if records:
            self.producer.produce_batch(
                self.spec.metrics_topic,
                [orjson.dumps(r) for r in records],
                [f"{self.spec.name}/{r['version']}".encode() for r in records],
                timestamps=[r["window_end_ms"] for r in records],
            )
            self.stats.windows += len(records)
            for record in records:
                self.stats.last_metrics[int(record["version"])] = record
            self.stats.history.extend(records)
        if alerts:
            self.producer.produce_batch(
                self.spec.alerts_topic,
                [a.to_json() for a in alerts],
                [f"{a.model}/{a.version}/{a.rule}".encode() for a in alerts],
                timestamps=[a.window_end_ms for a in alerts],
            )
            self.stats.alerts += len(alerts)
            for alert in alerts:
                log.warning("monitor %s: %s", self.spec.name, alert.message)
                if self.on_alert is not None:
                    self.on_alert(alert)

    # -- commit and restore ---------------------------------------------------------------------------------
    def commit(self) -> None:
        """State changes, offsets, commit: one transaction."""
        assert self.producer is not None and self.consumer is not None
        if not self.producer.in_transaction:
            return
        keys, values = self._state_changes()
        self.producer.produce_batch(self.changelog, values, keys)
        if self._pending:
            self.producer.send_offsets(self.consumer, self._pending)
        self.producer.commit()
        self._pending = {}
        self.stats.commits += 1

    def _state_changes(self) -> tuple[list[bytes | None], list[bytes | None]]:
        keys: list[bytes | None] = []
        values: list[bytes | None] = []
        predictions, labels = self.join.take_changes()
        for prefix, table in (("p", predictions), ("l", labels)):
            if table is None:
                continue
            self._sequence += 1
            key = f"{prefix}/{self._sequence}"
            ts = table.column("TS").to_numpy(zero_copy_only=False)
            window = self.spec.window_ms
            # retired once every row has left memory: predictions when their window settled, labels when no
            # unsettled prediction can match them (see LabelJoin.settle)
            self._segments[key] = int((ts.max() // window + 1) * window) if prefix == "p" else int(ts.max())
            keys.append(key.encode())
            values.append(_ipc(table))
        settled, within = self.join.settled_until, self.spec.within_ms
        for key, bound in list(self._segments.items()):
            retired = bound <= settled if key.startswith("p/") else bound + within < settled
            if retired:
                del self._segments[key]
                keys.append(key.encode())
                values.append(None)
        meta = {
            "format": 1,
            "marks": self.join.marks(),
            "alerts": self.alerter.to_dict(),
            "drift": {str(k): {str(v): d for v, d in per.items()} for k, per in self.drift.items()},
            "segments": self._segments,
            "sequence": self._sequence,
        }
        keys.append(_META)
        values.append(orjson.dumps(meta))
        return keys, values

    def _restore(self) -> None:
        with CompactedReader(self.config, self.changelog, missing_ok=True) as reader:
            latest = reader.catch_up(60.0)
        raw = latest.get(_META)
        if raw is None:
            return
        meta = orjson.loads(raw)
        self._segments = {k: int(v) for k, v in meta["segments"].items()}
        self._sequence = int(meta["sequence"])
        self.alerter = Alerter.from_dict(meta["alerts"], self.spec.alert_rules())
        self.drift = {int(k): {int(v): d for v, d in per.items()} for k, per in meta["drift"].items()}

        def tables(prefix: str) -> list[pa.Table]:
            found = [(int(k.decode().split("/")[1]), v) for k, v in latest.items()
                     if k is not None and k.decode() in self._segments and k.decode().startswith(prefix)]  # fmt: skip
            return [ipc.open_stream(v).read_all() for _, v in sorted(found)]

        self.join.restore(meta["marks"], tables("p/"), tables("l/"))
        self.stats.restored_rows = self.join.rows
        log.info("monitor %s: restored %d row(s) awaiting labels", self.spec.name, self.join.rows)


def _ipc(table: pa.Table) -> bytes:
    sink = pa.BufferOutputStream()
    with ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    return sink.getvalue().to_pybytes()
