"""Runs the deployment's monitors in this process, one thread each, following their definitions.

Monitors defined later start, removed ones stop; a worker that fails is restarted with backoff (it carries on
from its changelog and committed offsets). The latest metrics of every monitor and version are exported to
Prometheus as gauges (``streamml_monitor_<metric>{monitor, model, version}``).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.core import GaugeMetricFamily, Metric

from streamml.config import Settings
from streamml.monitor.alerts import Alert
from streamml.monitor.spec import MonitorSpec, read_monitors
from streamml.monitor.worker import MonitorWorker
from streamml.runtime.observe import StatusPublisher
from streamml.runtime.session import Session

log = logging.getLogger(__name__)

RESTART_BACKOFF_S = (1.0, 2.0, 5.0, 10.0, 30.0)
#: the metrics of a window exported as gauges
EXPORTED = ("count", "labelled", "unlabelled", "accuracy", "precision", "recall", "f1", "roc_auc", "pr_auc", "ece",
            "mean_score", "drift_psi_max", "drift_js_max", "drifted_features")  # fmt: skip


@dataclass
class _Running:
    thread: threading.Thread
    stop: threading.Event
    spec: MonitorSpec
    worker: MonitorWorker | None = None
    error: str | None = None


@dataclass
class MonitorSupervisor:
    """Runs ``only`` (default: every) monitor defined in the deployment until :meth:`stop`."""

    settings: Settings
    only: Iterable[str] | None = None
    refresh_s: float = 2.0
    on_alert: Callable[[Alert], None] | None = None
    #: publish the monitors' status for ``SHOW QUERIES`` and ``streamml status``
    publish_status: bool = True
    _running: dict[str, _Running] = field(default_factory=dict, init=False)
    _stopped: threading.Event = field(default_factory=threading.Event, init=False)

    def run(self, stop: threading.Event | None = None, metrics_port: int | None = None) -> None:
        stop = stop or self._stopped
        publisher = (
            StatusPublisher(self.settings, self.snapshot, role="monitors").start() if self.publish_status else None
        )
        if metrics_port is not None:
            registry = CollectorRegistry()
            registry.register(_Collector(self))
            start_http_server(metrics_port, registry=registry)
        try:
            while not stop.is_set() and not self._stopped.is_set():
                self.sync()
                stop.wait(self.refresh_s)
        finally:
            self.shutdown()
            if publisher is not None:
                publisher.stop()

    def sync(self) -> None:
        """Start defined monitors that do not run, stop removed or changed ones."""
        wanted = read_monitors(self.settings)
        if self.only is not None:
            names = set(self.only)
            wanted = {n: s for n, s in wanted.items() if n in names}
        for name, running in list(self._running.items()):
            if wanted.get(name) != running.spec:
                log.info("monitor %s was removed or changed; stopping it", name)
                running.stop.set()
                running.thread.join(30)
                del self._running[name]
        for name in sorted(set(wanted) - set(self._running)):
            self._running[name] = self._start(wanted[name])

    def _start(self, spec: MonitorSpec) -> _Running:
        stop = threading.Event()
        running = _Running(threading.Thread(target=lambda: self._supervise(running), name=f"monitor-{spec.name}",
                                            daemon=True), stop, spec)  # fmt: skip
        running.thread.start()
        return running

    def _supervise(self, running: _Running) -> None:
        failures = 0
        while not running.stop.is_set():
            try:
                engine = Session(self.settings).engine
                running.worker = MonitorWorker(running.spec, self.settings, engine, on_alert=self.on_alert)
                running.worker.run(running.stop)
                running.error = None
                return
            except Exception as exc:
                running.error = str(exc)
                delay = RESTART_BACKOFF_S[min(failures, len(RESTART_BACKOFF_S) - 1)]
                failures += 1
                log.error("monitor %s failed (%s); restarting in %.0f s", running.spec.name, exc, delay)
                running.stop.wait(delay)

    def snapshot(self) -> dict[str, object]:
        """The monitors' status, published next to the runners' (``SHOW QUERIES``, ``streamml status``)."""
        queries = []
        for running in list(self._running.values()):
            if running.worker is not None:
                state = "RUNNING" if running.error is None else "RESTARTING"
                queries.append(running.worker.snapshot(state, running.error))
        return {"queries": queries}

    def workers(self) -> dict[str, MonitorWorker]:
        return {name: r.worker for name, r in self._running.items() if r.worker is not None}

    def errors(self) -> dict[str, str]:
        return {name: r.error for name, r in self._running.items() if r.error}

    def stop(self) -> None:
        self._stopped.set()

    def shutdown(self, timeout_s: float = 30.0) -> None:
        for running in self._running.values():
            running.stop.set()
        for running in self._running.values():
            running.thread.join(timeout_s)
        self._running.clear()


class _Collector:
    """Prometheus gauges over the latest window of every monitor and model version."""

    def __init__(self, supervisor: MonitorSupervisor) -> None:
        self.supervisor = supervisor

    def collect(self) -> Iterator[Metric]:
        families = {m: GaugeMetricFamily(f"streamml_monitor_{m}", f"{m} of the latest settled window",
                                         labels=["monitor", "model", "version", "role"]) for m in EXPORTED}  # fmt: skip
        for name, worker in self.supervisor.workers().items():
            for version, record in worker.stats.last_metrics.items():
                labels = [name, worker.spec.model, str(version), worker.spec.role]
                for metric, family in families.items():
                    value = record.get(metric)
                    if isinstance(value, int | float) and not isinstance(value, bool):
                        family.add_metric(labels, float(value))
        yield from families.values()
