"""The monitoring part of the fraud demo: labels that arrive late on their own topic, a drift injected into
the live traffic, and the product's monitor watching the scores.

:class:`LateLabels` publishes each live transaction's label ``delay_s`` after the transaction itself (as a
chargeback would come), :func:`drifting` shifts one feature of the live traffic from a given moment on, and
:class:`DemoMonitor` defines the monitor, runs it, and keeps what the live view and the report show: the
metrics of every settled window and the alerts.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from streamml.config import Settings
from streamml.formats import get_format
from streamml.kafka import Producer, client_config
from streamml.monitor.alerts import Alert, default_rules
from streamml.monitor.spec import MonitorSpec, publish_monitor
from streamml.monitor.supervisor import MonitorSupervisor
from streamml.runtime.session import Session, wait_for


def drifting(chunks: Iterator[pa.Table], column: str, factor: float, after: Callable[[], bool]) -> Iterator[pa.Table]:
    """``chunks`` with ``column`` multiplied by ``factor`` once ``after()`` turns true."""
    for chunk in chunks:
        if not after():
            yield chunk
            continue
        index = chunk.schema.get_field_index(column)
        yield chunk.set_column(index, column, pc.multiply(chunk.column(column), factor))


class LateLabels:
    """Publishes ``(Id, Class)`` of each chunk handed to :meth:`add` to ``topic``, ``delay_s`` later."""

    def __init__(self, settings: Settings, topic: str, delay_s: float) -> None:
        self.topic, self.delay_s = topic, delay_s
        self._due: deque[tuple[float, pa.Table]] = deque()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._producer = Producer(client_config(settings))
        self._format = get_format("JSON", pa.schema([("Id", pa.int64()), ("Class", pa.string())]))
        self._thread = threading.Thread(target=self._run, name="late-labels", daemon=True)
        self.sent = 0

    def start(self) -> LateLabels:
        self._thread.start()
        return self

    def add(self, chunk: pa.Table) -> None:
        labelled = chunk.select(["Id", "Class"]).filter(chunk.column("Class").is_valid())
        with self._lock:
            self._due.append((time.monotonic() + self.delay_s, labelled))

    def _run(self) -> None:
        while not self._stop.is_set():
            with self._lock:
                ready = []
                while self._due and self._due[0][0] <= time.monotonic():
                    ready.append(self._due.popleft()[1])
            for table in ready:
                keys = [str(i).encode() for i in table.column("Id").to_pylist()]
                self._producer.produce_batch(self.topic, self._format.encode(table), keys)
                self.sent += table.num_rows
            self._stop.wait(0.1)

    def stop(self) -> None:
        """Publish what is still due at once, then stop."""
        self._stop.set()
        self._thread.join(10)
        with self._lock:
            rest, self._due = [t for _, t in self._due], deque()
        for table in rest:
            self._producer.produce_batch(self.topic, self._format.encode(table), None)
        self._producer.flush()


@dataclass
class DemoMonitor:
    """The fraud scores watched by a monitor, with the metrics and alerts kept for the view and the report."""

    settings: Settings
    spec: MonitorSpec
    windows: list[dict[str, Any]] = field(default_factory=list)
    alerts: list[Alert] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event, init=False)
    _thread: threading.Thread | None = field(default=None, init=False)
    _supervisor: MonitorSupervisor | None = field(default=None, init=False)

    @classmethod
    def define(cls, settings: Settings, session: Session, *, model: str, scores: str, labels: str,
               labels_topic: str, window_s: float, within_s: float, psi: float,
               topics: tuple[str, str]) -> DemoMonitor:  # fmt: skip
        """Create the labels stream and define the monitor (F1-style accuracy floor off: fraud is rare)."""
        session.execute(f"CREATE STREAM IF NOT EXISTS {labels} (Id BIGINT, Class VARCHAR) "
                        f"WITH (KAFKA_TOPIC='{labels_topic}', VALUE_FORMAT='JSON', PARTITIONS=3);")  # fmt: skip
        spec = MonitorSpec(name=model, model=model, predictions=scores, labels=labels, key="Id", label="Class",
                           positive="1", window_ms=int(window_s * 1000), within_ms=int(within_s * 1000),
                           metrics_topic=topics[0], alerts_topic=topics[1],
                           rules=[r.to_dict() for r in default_rules(psi=psi, accuracy_floor=0.5)])  # fmt: skip
        publish_monitor(settings, spec)
        return cls(settings, spec)

    def start(self, timeout_s: float = 60.0) -> DemoMonitor:
        self._supervisor = MonitorSupervisor(self.settings, only=[self.spec.name], refresh_s=0.5,
                                             on_alert=self.alerts.append)  # fmt: skip
        self._thread = threading.Thread(target=self._supervisor.run, args=(self._stop,), daemon=True)
        self._thread.start()
        # it reads new scores only: it must stand in its group before live traffic starts
        if not wait_for(lambda: any(w.assigned for w in self._supervisor.workers().values()), timeout_s):  # type: ignore[union-attr]
            raise TimeoutError(f"monitor {self.spec.name} did not start within {timeout_s:.0f} s")
        return self

    def latest(self) -> dict[str, Any] | None:
        """The metrics of the latest settled window of the version in force."""
        workers = self._supervisor.workers() if self._supervisor else {}
        worker = workers.get(self.spec.name)
        if worker is None or not worker.stats.last_metrics:
            return None
        return worker.stats.last_metrics[max(worker.stats.last_metrics)]

    def collect(self) -> None:
        """Keep every window the worker has published so far."""
        worker = (self._supervisor.workers() if self._supervisor else {}).get(self.spec.name)
        if worker is not None:
            self.windows = list(worker.stats.history)

    def stop(self) -> None:
        self.collect()
        self._stop.set()
        if self._thread is not None:
            self._thread.join(60)

    def plot(self, out: Path) -> Path | None:
        """F1, PR AUC and the largest feature PSI per window, alerts marked; None without windows."""
        if not self.windows:
            return None
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        start = self.windows[0]["window_start_ms"]
        x = [(w["window_end_ms"] - start) / 1000 for w in self.windows]
        fig, (top, bottom) = plt.subplots(2, 1, figsize=(8, 5), sharex=True)
        for metric in ("f1", "pr_auc", "recall", "precision"):
            top.plot(x, [w.get(metric) if w.get(metric) is not None else float("nan") for w in self.windows],
                     marker="o", label=metric)  # fmt: skip
        top.set_ylabel("per window")
        top.set_ylim(0, 1.05)
        top.legend(loc="lower left")
        bottom.plot(x, [w.get("drift_psi_max") or 0.0 for w in self.windows], marker="o", color="tab:red")
        bottom.axhline(self.spec.alert_rules()[0].threshold, color="grey", linestyle="--", label="alert threshold")
        for alert in self.alerts:
            if alert.state.value == "FIRING":
                bottom.axvline((alert.window_end_ms - start) / 1000, color="tab:orange", alpha=0.6)
        bottom.set_ylabel("largest feature PSI")
        bottom.set_xlabel("seconds (window end, event time)")
        bottom.legend(loc="upper left")
        fig.suptitle(f"monitor {self.spec.name}: labels joined late, per {self.spec.window_ms // 1000} s window")
        fig.tight_layout()
        path = out / "monitor.png"
        fig.savefig(path, dpi=100)
        plt.close(fig)
        return path
