"""The operational side of a monitored model: latency and dead letters of the queries that score it.

A :class:`QueryHealth` samples, in a background thread, the status every worker of the deployment publishes
(:func:`streamml.runtime.observe.read_status`) for the persistent queries writing a monitor's predictions,
and gives the monitor the latest figures without blocking it: end-to-end latency percentiles (the workers'
own fine-grained histograms, the worst worker counting) and the dead-letter rate between two samples
(dead letters / records in), which alert rules watch next to quality and drift.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable
from typing import Any

from streamml.config import Settings
from streamml.runtime.observe import is_alive, read_status

log = logging.getLogger(__name__)

SAMPLE_EVERY_S = 5.0
PERCENTILES = ("latency_p50_ms", "latency_p95_ms", "latency_p99_ms")


def health_of(workers: Iterable[dict[str, Any]], queries: set[str]) -> dict[str, float]:
    """Totals and worst percentiles of ``queries`` over the live ``workers`` (records of ``read_status``)."""
    totals = {"records_in": 0.0, "dead_letters": 0.0}
    worst: dict[str, float] = {}
    for worker in workers:
        if not is_alive(worker):
            continue
        for query in worker.get("queries", []):
            if str(query.get("query", "")).upper() not in queries:
                continue
            for key in totals:
                totals[key] += float(query.get(key) or 0)
            for key in PERCENTILES:
                if query.get(key) is not None:
                    worst[key] = max(worst.get(key, 0.0), float(query[key]))
    return {**totals, **worst}


class QueryHealth:
    """Latest latency and dead-letter rate of ``queries``, sampled every ``every_s`` (see module docstring)."""

    def __init__(self, settings: Settings, queries: Iterable[str], every_s: float = SAMPLE_EVERY_S) -> None:
        self.settings = settings
        self.queries = {q.upper() for q in queries}
        self.every_s = every_s
        self._latest: dict[str, float | None] = {}
        self._previous: dict[str, float] | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="query-health", daemon=True)

    def start(self) -> QueryHealth:
        if self.queries:
            self._thread.start()
        return self

    def latest(self) -> dict[str, float | None]:
        """``latency_p50_ms`` / ``_p95_ms`` / ``_p99_ms`` and ``dead_letter_rate`` (empty before a sample)."""
        return dict(self._latest)

    def sample(self) -> dict[str, float | None]:
        """Take one sample now (the thread calls this); returns it."""
        current = health_of(read_status(self.settings, timeout_s=5.0), self.queries)
        found: dict[str, float | None] = {k: current.get(k) for k in PERCENTILES}
        if self._previous is not None:
            records = current["records_in"] - self._previous["records_in"]
            dead = current["dead_letters"] - self._previous["dead_letters"]
            found["dead_letter_rate"] = dead / records if records > 0 else None
        self._previous = current
        self._latest = found
        return found

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.sample()
            except Exception as exc:  # a status read that fails leaves the last figures in place
                log.debug("could not read the workers' status: %s", exc)
            self._stop.wait(self.every_s)

    def stop(self) -> None:
        self._stop.set()
