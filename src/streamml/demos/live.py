"""What every demo's live phase and report share: the running counters of the live view and the report's
latency line and training plots."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from streamml.models.registry import ModelVersion
from streamml.runtime.metrics import LatencyHistogram


@dataclass
class LiveCounters:
    """Produced and scored records, the scoring rate, alerts, the model serving and end-to-end latency."""

    elapsed_s: float = 0.0
    produced: int = 0
    scored: int = 0
    rate: float = 0.0
    alerts: int = 0
    model: str = "-"
    latency: LatencyHistogram = field(default_factory=LatencyHistogram, repr=False)
    _last_scored: int = field(default=0, repr=False)

    @property
    def p50_ms(self) -> float | None:
        return self.latency.quantile(0.5)

    @property
    def p99_ms(self) -> float | None:
        return self.latency.quantile(0.99)

    def tick(self, elapsed_s: float, every_s: float = 0.5) -> bool:
        """Update the rate once ``every_s`` has passed since the last update; says whether it did."""
        if elapsed_s - self.elapsed_s < every_s:
            return False
        self.rate = (self.scored - self._last_scored) / (elapsed_s - self.elapsed_s)
        self.elapsed_s, self._last_scored = elapsed_s, self.scored
        return True

    def latency_line(self, what: str) -> str:
        """``- <what>: p50 .. ms, p95 .. ms, p99 .. ms`` for the report."""
        q = self.latency.quantile
        return f"- {what}: p50 {ms(q(0.5))}, p95 {ms(q(0.95))}, p99 {ms(q(0.99))}"


def copy_plots(versions: Iterable[tuple[str, ModelVersion]], out: Path) -> list[str]:
    """Copy each version's training plots next to the report as ``<name>-<plot>``; the report's lines."""
    lines: list[str] = []
    for name, version in versions:
        lines += ["", f"### {name} ({version.ref})"]
        for plot, data in version.plots().items():
            target = out / f"{name}-{plot}"
            target.write_bytes(data)
            lines.append(f"\n![{name} {Path(plot).stem}]({target.name})")
    return lines


def ms(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.1f} ms"


def num(value: Any, digits: int = 3) -> str:
    """A metric for a report: ``digits`` decimals, or ``n/a`` when there is none."""
    return "n/a" if value is None else f"{float(value):.{digits}f}"


def write_report(out: Path, lines: list[str], timings: dict[str, float]) -> Path:
    """``out/report.md``: ``lines``, then a section with the timings of the demo's steps; its path."""
    lines = [*lines, "", "## Timings", "", *(f"- {k}: {v:.1f} s" for k, v in timings.items())]
    path = out / "report.md"
    path.write_text("\n".join(lines) + "\n")
    return path
