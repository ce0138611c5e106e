"""What the dashboard shows: a bounded, in-memory view of the monitor's topics and the workers' status.

:class:`DashboardState` is broker-free: it takes decoded records (monitor windows, alerts, model control
events, worker status) and keeps the last :data:`MAX_WINDOWS` windows per model version, the last
:data:`MAX_ITEMS` alerts and control events, and a sampled history of each query's throughput, lag,
latency and dead letters. :meth:`DashboardState.view` is the JSON the page draws.

:class:`DashboardFeed` follows the topics in a background thread (from the beginning, ``read_committed``;
a missing topic reads as empty until it appears) and feeds the state.

    >>> s = DashboardState()
    >>> s.add_windows([{"model": "fraud", "version": 1, "window_end_ms": 2000, "accuracy": 0.9}])
    >>> [w["accuracy"] for w in s.view()["models"][0]["versions"][0]["windows"]]
    [0.9]
"""

from __future__ import annotations

import bisect
import logging
import math
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any

import orjson

from streamml.config import Settings
from streamml.kafka import client_config
from streamml.kafka.compacted import CompactedReader
from streamml.monitor.drift import PSI_THRESHOLD
from streamml.runtime.observe import STATUS_PERIOD_S, is_alive
from streamml.runtime.topics import MODELS_TOPIC, MONITOR_ALERTS_TOPIC, MONITOR_METRICS_TOPIC, status_topic

log = logging.getLogger(__name__)

#: windows kept per model version
MAX_WINDOWS = 500
#: alerts, control events, and status samples per query kept
MAX_ITEMS = 200
#: the per-window fields the page charts
WINDOW_FIELDS = (
    "window_start_ms", "window_end_ms", "count", "labelled", "evaluated", "accuracy", "precision", "recall",
    "f1", "roc_auc", "pr_auc", "ece", "mean_score", "drift_psi_max", "drift_js_max", "drifted_features",
)  # fmt: skip
#: the fields of a query's status the page shows
QUERY_FIELDS = ("query", "state", "error", "records_in", "records_out", "dead_letters", "rate_in",
                "latency_p50_ms", "latency_p95_ms", "latency_p99_ms")  # fmt: skip
#: control actions drawn as a vertical marker on the time charts, and their label
MARKERS = {"promote": "promoted", "rollback": "rolled back"}
#: fields of a control event shown as its detail, the first one present
DETAIL_FIELDS = ("reason", "detail", "message")


def _number(value: Any) -> float | None:
    """A finite float, or None (NaN and infinities read as missing)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    v = float(value)
    return v if math.isfinite(v) else None


def _time_ms(value: Any) -> int | None:
    """Epoch milliseconds from an ISO timestamp, epoch seconds or milliseconds."""
    if isinstance(value, str):
        try:
            return int(datetime.fromisoformat(value).timestamp() * 1000)
        except ValueError:
            return None
    v = _number(value)
    if v is None:
        return None
    return int(v if v > 1e11 else v * 1000)


class _Version:
    """The windows of one model version, ordered by window end; a window seen again replaces the old one."""

    def __init__(self, model: str, version: int) -> None:
        self.model = model
        self.version = version
        self.monitor: str | None = None
        self.role: str | None = None
        self.ends: list[int] = []
        self.windows: list[dict[str, Any]] = []
        self.features: dict[str, dict[str, Any]] = {}
        self.features_end = -1

    def add(self, record: Mapping[str, Any]) -> None:
        end = int(record.get("window_end_ms") or 0)
        window = {k: record.get(k) for k in WINDOW_FIELDS}
        for k in WINDOW_FIELDS[5:]:
            window[k] = _number(window[k])
        i = bisect.bisect_left(self.ends, end)
        if i < len(self.ends) and self.ends[i] == end:
            self.windows[i] = window
        else:
            self.ends.insert(i, end)
            self.windows.insert(i, window)
        if len(self.windows) > MAX_WINDOWS:
            del self.ends[:-MAX_WINDOWS], self.windows[:-MAX_WINDOWS]
        self.monitor = record.get("monitor") or self.monitor
        self.role = record.get("role") or self.role
        drift = record.get("drift") or {}
        if end >= self.features_end and isinstance(drift.get("features"), Mapping):
            self.features_end = end
            self.features = {
                name: {"psi": _number(d.get("psi")), "js": _number(d.get("js")), "drifted": bool(d.get("drifted")),
                       "kind": d.get("kind")}
                for name, d in drift["features"].items() if isinstance(d, Mapping)
            }  # fmt: skip

    def view(self) -> dict[str, Any]:
        return {
            "version": self.version,
            "monitor": self.monitor,
            "role": self.role,
            "windows": list(self.windows),
            "features": dict(sorted(self.features.items())),
            "features_window_end_ms": self.features_end if self.features_end >= 0 else None,
        }


class DashboardState:
    """The dashboard's bounded view; every method is safe to call from any thread."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._versions: dict[tuple[str, int], _Version] = {}
        self._alerts: deque[dict[str, Any]] = deque(maxlen=MAX_ITEMS)
        self._firing: dict[tuple[Any, ...], dict[str, Any]] = {}
        self._events: deque[dict[str, Any]] = deque(maxlen=MAX_ITEMS)
        self._workers: list[dict[str, Any]] = []
        self._ops: dict[str, deque[dict[str, Any]]] = {}
        self._errors: dict[str, str] = {}

    def add_windows(self, records: Iterable[Mapping[str, Any]]) -> None:
        """Monitor windows (the metrics topic's values, decoded)."""
        with self._lock:
            for r in records:
                model, version = r.get("model") or r.get("monitor"), r.get("version")
                if not isinstance(model, str) or not isinstance(version, int):
                    continue
                key = (model, version)
                entry = self._versions.get(key)
                if entry is None:
                    entry = self._versions[key] = _Version(model, version)
                entry.add(r)

    def add_alerts(self, records: Iterable[Mapping[str, Any]]) -> None:
        """Alerts (the alerts topic's values, decoded), oldest first."""
        with self._lock:
            for r in records:
                alert = dict(r)
                self._alerts.append(alert)
                key = (alert.get("model"), alert.get("version"), alert.get("rule"))
                if alert.get("state") == "FIRING":
                    self._firing[key] = alert
                else:
                    self._firing.pop(key, None)

    def add_events(self, records: Iterable[Mapping[str, Any]]) -> None:
        """Model control events (promotions, rollbacks, retraining steps; unknown actions kept as they are)."""
        with self._lock:
            for r in records:
                if not isinstance(r.get("action"), str):
                    continue
                event = {
                    "action": r["action"],
                    "model": r.get("model"),
                    "version": r.get("version"),
                    "alias": r.get("alias"),
                    "previous_version": r.get("previous_version"),
                    "time_ms": _time_ms(r.get("timestamp", r.get("time"))),
                    "detail": next((str(r[k]) for k in DETAIL_FIELDS if r.get(k) is not None), None),
                }
                self._events.append(event)

    def set_workers(self, workers: Sequence[Mapping[str, Any]], now: float | None = None) -> None:
        """The latest status of every worker; samples each query's totals over the live workers."""
        now = time.time() if now is None else now
        rows = []
        totals: dict[str, dict[str, Any]] = {}
        for w in workers:
            alive = is_alive(dict(w), now)
            for q in w.get("queries") or []:
                lag = sum(v for v in (q.get("lag") or {}).values() if isinstance(v, int | float))
                row = {k: q.get(k) for k in QUERY_FIELDS}
                row.update(worker=w.get("worker"), alive=alive, lag=lag, model_versions=q.get("model_versions") or {})
                rows.append(row)
                if not alive:
                    continue
                t = totals.setdefault(str(q.get("query")), {"time_ms": int(now * 1000), "rate_in": 0.0, "lag": 0,
                                                            "dead_letters": 0, "records_in": 0})  # fmt: skip
                t["rate_in"] += _number(q.get("rate_in")) or 0.0
                t["lag"] += lag
                t["dead_letters"] += int(q.get("dead_letters") or 0)
                t["records_in"] += int(q.get("records_in") or 0)
                for p in ("latency_p50_ms", "latency_p95_ms", "latency_p99_ms"):
                    values = [v for v in (t.get(p), _number(q.get(p))) if v is not None]
                    t[p] = max(values) if values else None
        with self._lock:
            self._workers = rows
            for query, sample in totals.items():
                self._ops.setdefault(query, deque(maxlen=MAX_ITEMS)).append(sample)

    def set_error(self, topic: str, message: str | None) -> bool:
        """Note (or clear, with None) why ``topic`` cannot be read; True when the message is new."""
        with self._lock:
            if message is None:
                return self._errors.pop(topic, None) is not None
            new = self._errors.get(topic) != message
            self._errors[topic] = message
            return new

    def view(self) -> dict[str, Any]:
        """The JSON the page draws: models (their versions' windows and promotion markers), operations
        (workers' queries and their sampled history), alerts (newest first, and those firing now), events."""
        with self._lock:
            models: dict[str, list[_Version]] = {}
            for (model, _), entry in sorted(self._versions.items()):
                models.setdefault(model, []).append(entry)
            events = list(self._events)
            markers = [
                {"model": e["model"], "version": e["version"], "time_ms": e["time_ms"], "action": e["action"],
                 "label": f"v{e['version']} {MARKERS[e['action']]}"}
                for e in events if e["action"] in MARKERS and e["time_ms"] is not None and e["version"] is not None
            ]  # fmt: skip
            for m in markers:
                models.setdefault(m["model"], [])
            return {
                "time_ms": int(time.time() * 1000),
                "models": [
                    {
                        "model": name,
                        "versions": [v.view() for v in versions],
                        "markers": [m for m in markers if m["model"] == name],
                    }
                    for name, versions in sorted(models.items())
                ],
                "queries": list(self._workers),
                "ops": {query: list(samples) for query, samples in sorted(self._ops.items())},
                "alerts": list(reversed(self._alerts)),
                "firing": sorted(self._firing.values(), key=lambda a: -(a.get("window_end_ms") or 0)),
                "events": list(reversed(events)),
                "thresholds": {"psi": PSI_THRESHOLD},
                "errors": dict(self._errors),
            }


def _decode(values: Iterable[bytes | None], topic: str) -> list[dict[str, Any]]:
    """JSON objects among ``values``; anything else is logged and skipped."""
    out = []
    for value in values:
        if value is None:
            continue
        try:
            record = orjson.loads(value)
        except orjson.JSONDecodeError:
            log.warning("skipping a record of %s that is not JSON", topic)
            continue
        if isinstance(record, dict):
            out.append(record)
    return out


class DashboardFeed:
    """Follows the metrics, alerts and control topics and the workers' status into a :class:`DashboardState`
    in a background thread, until :meth:`stop`."""

    def __init__(
        self,
        settings: Settings,
        state: DashboardState | None = None,
        *,
        metrics_topic: str = MONITOR_METRICS_TOPIC,
        alerts_topic: str = MONITOR_ALERTS_TOPIC,
        control_topic: str = MODELS_TOPIC,
        poll_s: float = 0.2,
    ) -> None:
        self.state = state or DashboardState()
        self.poll_s = poll_s
        config = client_config(settings)
        self._readers = {
            topic: CompactedReader(config, topic, keep_latest=False, missing_ok=True)
            for topic in (metrics_topic, alerts_topic, control_topic)
        }
        self._sinks = {
            metrics_topic: self.state.add_windows,
            alerts_topic: self.state.add_alerts,
            control_topic: self.state.add_events,
        }
        self._status = CompactedReader(config, status_topic(settings.service_id), missing_ok=True)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="dashboard-feed", daemon=True)

    def start(self) -> DashboardFeed:
        self._thread.start()
        return self

    def _run(self) -> None:
        next_status = 0.0
        while not self._stop.is_set():
            busy = False
            for topic, reader in self._readers.items():
                busy |= self._read(reader, self._sinks[topic])
            if time.monotonic() >= next_status:
                next_status = time.monotonic() + STATUS_PERIOD_S
                self._read(self._status, None)
                self.state.set_workers(_decode(self._status.latest.values(), self._status.topic))
            if not busy:
                self._stop.wait(self.poll_s)

    def _read(self, reader: CompactedReader, sink: Callable[[list[dict[str, Any]]], None] | None) -> bool:
        """One poll of ``reader`` into ``sink``; an error is shown on the page and retried at the next poll."""
        try:
            values = reader.poll(0.0, 1000).values
        except Exception as exc:
            if self.state.set_error(reader.topic, str(exc)):
                log.warning("cannot read %s: %s", reader.topic, exc)
            self._stop.wait(1.0)
            return False
        self.state.set_error(reader.topic, None)
        if values and sink is not None:
            sink(_decode(values, reader.topic))
        return bool(values)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(10)
        for reader in (*self._readers.values(), self._status):
            reader.close()
