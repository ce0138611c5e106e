"""The monitoring part of the fraud demo: labels that arrive late on their own topic, a drift injected into
the live traffic, and the product's monitor watching the scores.

:class:`LateLabels` publishes each live transaction's label ``delay_s`` after the transaction itself (as a
chargeback would come), :func:`drifting` shifts one feature of the live traffic from a given moment on, and
:class:`DemoMonitor` defines the monitor, runs it, and keeps what the live view and the report show: the
metrics of every settled window and the alerts. :class:`DemoRetraining` runs the product's retraining
policy on that monitor: a drift alert trains a candidate on the recent records, scores it in shadow and
promotes it only if it beats the version in force on the same labelled windows.
"""

from __future__ import annotations

import pickle
import subprocess
import sys
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
from streamml.models.events import RETRAINING_ACTIONS, ModelEvent
from streamml.monitor.alerts import Alert, AlertState, default_rules
from streamml.monitor.drift import METRIC_PSI_MAX
from streamml.monitor.policy import RetrainingLoop, RetrainPolicy
from streamml.monitor.spec import MonitorSpec, publish_monitor
from streamml.monitor.supervisor import MonitorSupervisor
from streamml.runtime.control import follow_control
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

    @property
    def drift_fired(self) -> bool:
        return any(a.state is AlertState.FIRING and a.rule == METRIC_PSI_MAX for a in self.alerts)

    def plot(self, out: Path, promotions: list[ModelEvent] | None = None) -> Path | None:
        """F1, PR AUC and the largest feature PSI per window and version, drift alerts and ``promotions``
        marked; None without windows."""
        if not self.windows:
            return None
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        start = min(w["window_start_ms"] for w in self.windows)
        versions = sorted({str(w["version"]) for w in self.windows}, key=lambda v: (len(v), v))
        fig, (top, bottom) = plt.subplots(2, 1, figsize=(8, 5), sharex=True)
        for i, version in enumerate(versions):
            rows = [w for w in self.windows if str(w["version"]) == version]
            x = [(w["window_end_ms"] - start) / 1000 for w in rows]
            style = "-" if i == len(versions) - 1 else "--"
            for metric, color in (("f1", "tab:blue"), ("pr_auc", "tab:orange")):
                y = [w[metric] if w.get(metric) is not None else float("nan") for w in rows]
                top.plot(x, y, style, marker="o", markersize=3, color=color, label=f"{metric} v{version}")
            bottom.plot(x, [w.get("drift_psi_max") or 0.0 for w in rows], style, marker="o", markersize=3,
                        color="tab:red", label=f"v{version}")  # fmt: skip
        for event in promotions or []:
            at = (event.timestamp.timestamp() * 1000 - start) / 1000
            top.axvline(at, color="tab:green", linestyle=":", label=f"promoted v{event.version}")
        top.set_ylabel("per window")
        top.set_ylim(0, 1.05)
        top.legend(loc="lower left", fontsize="small", ncol=2)
        bottom.axhline(self.spec.alert_rules()[0].threshold, color="grey", linestyle="--", label="alert threshold")
        for alert in self.alerts:
            if alert.state is AlertState.FIRING and alert.rule == METRIC_PSI_MAX:
                bottom.axvline((alert.window_end_ms - start) / 1000, color="tab:orange", alpha=0.6)
        bottom.set_ylabel("largest feature PSI")
        bottom.set_xlabel("seconds (window end, event time)")
        bottom.legend(loc="upper left", fontsize="small")
        fig.suptitle(f"monitor {self.spec.name}: labels joined late, per {self.spec.window_ms / 1000:g} s window")
        fig.tight_layout()
        path = out / "monitor.png"
        fig.savefig(path, dpi=100)
        plt.close(fig)
        return path


class DemoRetraining:
    """The retraining policy on a demo monitor, in a process of its own, as a deployment runs it beside its
    runners (training shares no interpreter lock with the scoring threads). Its steps are read back from the
    model control topic, where the loop publishes each of them. The process stops when its standard input
    closes: on :meth:`stop`, or when this process ends."""

    def __init__(self, settings: Settings, policy: RetrainPolicy) -> None:
        self.settings, self.policy = settings, policy
        self.events: list[ModelEvent] = []
        #: when the first promotion or rejection was seen (monotonic clock)
        self.decided_at: float | None = None
        self._process: subprocess.Popen[bytes] | None = None
        self._follower = follow_control(settings, self._seen)

    def _seen(self, event: ModelEvent) -> None:
        if event.model == self.policy.model and event.action in (*RETRAINING_ACTIONS, "promote"):
            self.events.append(event)
            if event.action in ("promote", "reject") and self.decided_at is None:
                self.decided_at = time.monotonic()

    def start(self) -> DemoRetraining:
        self._process = subprocess.Popen([sys.executable, "-m", __name__], stdin=subprocess.PIPE)
        assert self._process.stdin is not None
        self._process.stdin.write(pickle.dumps((self.settings, self.policy.to_json())))
        self._process.stdin.flush()
        return self

    @property
    def promotions(self) -> list[ModelEvent]:
        return [e for e in self.events if e.action == "promote"]

    def stop(self, timeout_s: float = 120.0) -> None:
        """Stop the loop; a candidate still in shadow is retired (its query and monitor end, the version stays)."""
        process, self._process = self._process, None
        if process is not None:
            assert process.stdin is not None
            process.stdin.close()
            try:
                process.wait(timeout_s)
            except subprocess.TimeoutExpired:
                process.kill()
        self._follower.stop()


def _run_policy() -> None:
    """The retraining process: settings and policy pickled on standard input by :class:`DemoRetraining`; the
    loop steps until standard input closes."""
    settings, policy = pickle.load(sys.stdin.buffer)
    loop = RetrainingLoop(settings, RetrainPolicy.from_json(policy))
    stopping = threading.Event()

    def wait_for_eof() -> None:
        sys.stdin.buffer.read()
        stopping.set()

    threading.Thread(target=wait_for_eof, daemon=True).start()
    try:
        loop.run(stopping, interval_s=0.25)
    finally:
        if loop.shadow is not None:
            loop.retire()


if __name__ == "__main__":
    _run_policy()
