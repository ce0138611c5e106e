"""Inference metrics by model and version, in Prometheus form under the names model servers use.

The counters carry Triton's names and form (``nv_inference_request_success``, ``nv_inference_count``,
``nv_inference_exec_count``, ``nv_inference_*_duration_us``; no ``_total`` suffix), which dashboards for model
servers expect; batch sizes are a Prometheus histogram. Each :class:`Metrics` owns its state, so several
services in one process (tests, a server beside a worker) never collide.
"""

from __future__ import annotations

import threading

from prometheus_client import CollectorRegistry, Histogram, generate_latest

from streamml.models.registry import ModelVersion

_LABELS = ("model", "version")
_BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 4096, 16384)
#: counter name -> help, written as Triton writes them (no ``_total`` suffix)
COUNTERS = {
    "nv_inference_request_success": "Number of successful inference requests, all batch sizes",
    "nv_inference_request_failure": "Number of failed inference requests, all batch sizes",
    "nv_inference_count": "Number of inferences (rows) performed",
    "nv_inference_exec_count": "Number of model executions (batches) performed",
    "nv_inference_request_duration_us": "Cumulative inference request duration in microseconds",
    "nv_inference_queue_duration_us": "Cumulative time requests spent waiting for a batch, in microseconds",
    "nv_inference_compute_infer_duration_us": "Cumulative model execution time in microseconds",
}
#: gauge name -> help, as Triton names it
GAUGES = {"nv_inference_pending_request_count": "Requests waiting for their batch or in a model execution"}


class Metrics:
    """Requests, rows, batches, queue and model time, and errors, labelled by model and version."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
        self.registry = CollectorRegistry(auto_describe=True)
        self.batch_size = Histogram(
            "streamml_inference_batch_rows", "Rows per model execution", _LABELS, buckets=_BATCH_BUCKETS,
            registry=self.registry,
        )  # fmt: skip

    def _add(self, name: str, labels: tuple[tuple[str, str], ...], value: float) -> None:
        with self._lock:
            self._counts[(name, labels)] = self._counts.get((name, labels), 0.0) + value

    def value(self, name: str, **labels: str) -> float:
        """The current value of metric ``name`` for exactly these labels (0 when never counted)."""
        with self._lock:
            return self._counts.get((name, tuple(sorted(labels.items()))), 0.0)

    def executed(self, version: ModelVersion, rows: int, seconds: float) -> None:
        """One model execution of ``rows`` rows that took ``seconds``."""
        labels = _labels(version.name, str(version.version))
        self._add("nv_inference_count", labels, rows)
        self._add("nv_inference_exec_count", labels, 1)
        self._add("nv_inference_compute_infer_duration_us", labels, seconds * 1e6)
        self.batch_size.labels(version.name, str(version.version)).observe(rows)

    def failed(self, version: ModelVersion | None, requests: int, reason: str, model: str = "") -> None:
        """``requests`` requests that failed for ``reason`` (``model``, ``input``, ``timeout``...)."""
        name, number = (version.name, str(version.version)) if version is not None else (model, "")
        self._add("nv_inference_request_failure", _labels(name, number, reason=reason), requests)

    def request(self, version: ModelVersion, seconds: float, queued_s: float = 0.0) -> None:
        """One request answered in ``seconds``, of which it waited ``queued_s`` for its batch."""
        labels = _labels(version.name, str(version.version))
        self._add("nv_inference_request_success", labels, 1)
        self._add("nv_inference_request_duration_us", labels, seconds * 1e6)
        self._add("nv_inference_queue_duration_us", labels, queued_s * 1e6)

    def pending(self, version: ModelVersion, change: int) -> None:
        """``change`` requests more (or fewer) are waiting for ``version``."""
        self._add("nv_inference_pending_request_count", _labels(version.name, str(version.version)), change)

    def exposition(self) -> bytes:
        """The Prometheus text format of every metric."""
        with self._lock:
            counts = sorted(self._counts.items())
        lines: list[str] = []
        kinds = [(name, doc, "counter") for name, doc in COUNTERS.items()]
        for name, doc, kind in kinds + [(name, doc, "gauge") for name, doc in GAUGES.items()]:
            samples = [(labels, value) for (metric, labels), value in counts if metric == name]
            if not samples:
                continue
            lines += [f"# HELP {name} {doc}", f"# TYPE {name} {kind}"]
            for labels, value in samples:
                text = ",".join(f'{k}="{_escape(v)}"' for k, v in labels)
                lines.append(f"{name}{{{text}}} {value:g}" if value != int(value) else f"{name}{{{text}}} {int(value)}")
        return ("\n".join(lines) + "\n").encode() + generate_latest(self.registry)


def _labels(model: str, version: str, **extra: str) -> tuple[tuple[str, str], ...]:
    return tuple(sorted({"model": model, "version": version, **extra}.items()))


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')
