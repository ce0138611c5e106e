"""What a worker process costs in memory before it does any work: its imports, and which modules they load.

A fresh interpreter imports what a PREDICT worker imports (the benchmark child and the Runner, or the
``streamml run`` command) and reports its peak RSS (``VmHWM``) and ``sys.modules``. It runs in a subprocess
so that nothing this process already imported is counted, and so a test can check which libraries the
runtime path pulls in.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass

#: what a benchmark worker running the Runner imports (``python -m streamml.bench.child``, kind ``runner``)
WORKER_MODULES = ("streamml.bench.child", "streamml.kafka", "streamml.runtime.options", "streamml.runtime.runner")
#: what ``streamml run`` imports before it starts the Runner
CLI_MODULES = ("streamml.cli.app",)
#: libraries a worker never uses: training, plotting, dataframes it does not read
UNUSED_BY_WORKERS = ("matplotlib", "pandas", "sklearn", "skl2onnx", "torch", "onnx", "scipy")

_PROBE = """
import importlib, json, sys
for name in sys.argv[1:]:
    importlib.import_module(name)
status = dict(line.split(":", 1) for line in open("/proc/self/status") if ":" in line)
kib = lambda key: int(status[key].split()[0]) if key in status else None
print(json.dumps({"hwm_kib": kib("VmHWM"), "rss_kib": kib("VmRSS"), "anon_kib": kib("RssAnon"),
                  "file_kib": kib("RssFile"), "modules": sorted(sys.modules)}))
"""


@dataclass(frozen=True)
class ImportProbe:
    """Peak and current RSS of a fresh interpreter after importing ``imported``, and what it then held.

    ``file_mib`` is the part of the RSS backed by files (the pages of shared libraries it touched, which
    processes running the same libraries share), ``anon_mib`` the rest (heaps, stacks, allocations).
    """

    imported: tuple[str, ...]
    peak_rss_mib: float
    rss_mib: float
    modules: frozenset[str]
    anon_mib: float = 0.0
    file_mib: float = 0.0

    def loaded(self, packages: Sequence[str]) -> list[str]:
        """Those of ``packages`` (top-level names) that the imports loaded."""
        return [p for p in packages if p in self.modules]


def import_probe(modules: Sequence[str] = WORKER_MODULES, python: str | None = None) -> ImportProbe:
    """Import ``modules`` in a fresh ``python`` (this interpreter by default) and measure it."""
    argv = [python or sys.executable, "-c", _PROBE, *modules]
    done = subprocess.run(argv, capture_output=True, text=True, check=False, timeout=120)
    if done.returncode != 0:
        tail = done.stderr.strip().splitlines()[-1:] or ["(no output)"]
        raise RuntimeError(f"importing {', '.join(modules)} failed: {tail[0]}")
    report = json.loads(done.stdout.strip().splitlines()[-1])
    return ImportProbe(
        tuple(modules),
        (report["hwm_kib"] or 0) / 1024,
        (report["rss_kib"] or 0) / 1024,
        frozenset(report["modules"]),
        (report.get("anon_kib") or 0) / 1024,
        (report.get("file_kib") or 0) / 1024,
    )
