"""What a benchmark scenario measured, and the process-level measurements behind it (CPU, peak RSS)."""

from __future__ import annotations

import resource
import statistics
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any


def cpu_seconds() -> float:
    """User + system CPU time of this process so far (every thread, librdkafka's included)."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def peak_rss_mib() -> float:
    """Peak resident set size of this process in MiB.

    Reads ``VmHWM`` from /proc: ``ru_maxrss`` survives ``exec``, so a worker started from a big parent would
    report the parent's peak.
    """
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q`` quantile (0..1) of ``values``, linearly interpolated."""
    ordered = sorted(values)
    if not ordered:
        raise ValueError("no values")
    pos = (len(ordered) - 1) * q
    low = int(pos)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (pos - low)


@dataclass
class ScenarioResult:
    """One run of one scenario. ``error`` set means FAILED: its numbers must not be reported."""

    name: str
    records: int
    seconds: float = 0.0
    cpu_s: float | None = None
    peak_rss_mib: float | None = None
    p50_ms: float | None = None
    p99_ms: float | None = None
    error: str | None = None
    skipped: bool = False
    notes: dict[str, str] = field(default_factory=dict)
    #: per stage of the worker loop, what its batches spent there (``StageTimes.snapshot()`` of the worker)
    stages: dict[str, dict[str, Any]] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.error is None

    @property
    def status(self) -> str:
        return "ok" if self.ok else "SKIPPED" if self.skipped else "FAILED"

    @property
    def records_per_s(self) -> float | None:
        if not self.ok or self.seconds <= 0:
            return None
        return self.records / self.seconds


@dataclass
class Summary:
    """The median over rounds of one scenario (FAILED if any round failed)."""

    name: str
    label: str
    records: int
    rounds: list[ScenarioResult]

    @property
    def error(self) -> str | None:
        return next((r.error for r in self.rounds if r.error), None)

    @property
    def ok(self) -> bool:
        return self.error is None and bool(self.rounds)

    @property
    def status(self) -> str:
        if self.ok:
            return "ok"
        return "SKIPPED" if any(r.skipped for r in self.rounds) else "FAILED"

    def _median(self, values: list[float | None]) -> float | None:
        present = [v for v in values if v is not None]
        return statistics.median(present) if self.ok and present else None

    @property
    def records_per_s(self) -> float | None:
        return self._median([r.records_per_s for r in self.rounds])

    @property
    def cpu_s(self) -> float | None:
        return self._median([r.cpu_s for r in self.rounds])

    @property
    def peak_rss_mib(self) -> float | None:
        return self._median([r.peak_rss_mib for r in self.rounds])

    @property
    def p50_ms(self) -> float | None:
        return self._median([r.p50_ms for r in self.rounds])

    @property
    def p99_ms(self) -> float | None:
        return self._median([r.p99_ms for r in self.rounds])

    @property
    def stages(self) -> list[str]:
        """The stages any round timed, in the order the first round that timed them lists them."""
        return list(dict.fromkeys(stage for r in self.rounds for stage in r.stages))

    def stage_ms(self, stage: str, statistic: str) -> float | None:
        """The median over rounds of ``statistic`` (``p50_ms``, ``p99_ms``, ``mean_ms``) of ``stage``."""
        return self._median([r.stages.get(stage, {}).get(statistic) for r in self.rounds])

    def ratio(self, other: Summary | None) -> float | None:
        """This scenario's records/s over ``other``'s, when both have a number."""
        if other is None or self.records_per_s is None or not other.records_per_s:
            return None
        return self.records_per_s / other.records_per_s


@dataclass(frozen=True)
class Target:
    """A goal stated as a ratio or a bound, and whether the measurement met it."""

    goal: str
    measured: str
    met: bool | None  # None: could not be measured (a scenario FAILED or was skipped)
