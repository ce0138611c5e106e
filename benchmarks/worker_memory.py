"""Memory of a PREDICT worker: peak RSS of a real worker process scoring a stream, next to the passthrough.

Starts the benchmark suite's workers (``python -m streamml.bench.child``, one process each, as
``streamml bench`` does) on the same input topic: the passthrough (a), which forwards bytes exactly-once, and
streamml's PREDICT query (b), exactly-once in the Runner. Each reports its peak RSS (``VmHWM``) once it has
processed the whole input; the import-only rows are fresh interpreters that import what a worker (or
``streamml run``) imports and nothing else.

    .venv/bin/python -m benchmarks.worker_memory --records 200000 --rounds 3
    .venv/bin/python -m benchmarks.worker_memory --records 50000 --rounds 1 --no-write

The local broker is started unless STREAMML_BOOTSTRAP names a cluster.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
from pathlib import Path

from benchmarks.report import table, write_section
from streamml.bench import data, scenarios
from streamml.bench.memory import CLI_MODULES, WORKER_MODULES, ImportProbe, import_probe
from streamml.bench.results import ScenarioResult
from streamml.config import Settings, load_settings
from streamml.kafka import LocalBroker


def _peak(results: list[ScenarioResult]) -> str:
    peaks = [r.peak_rss_mib for r in results if r.ok and r.peak_rss_mib is not None]
    if len(peaks) < len(results):
        failed = next(r for r in results if not r.ok)
        return f"FAILED: {failed.error}"
    return f"{statistics.median(peaks):,.0f} (max {max(peaks):,.0f})"


def _imported(probes: list[ImportProbe]) -> str:
    peak = statistics.median(p.peak_rss_mib for p in probes)
    return f"{peak:,.0f} ({statistics.median(p.file_mib for p in probes):,.0f} file-backed)"


def _rate(results: list[ScenarioResult]) -> str:
    rates = [r.records / r.seconds for r in results if r.ok and r.seconds > 0]
    return f"{statistics.median(rates):,.0f}" if len(rates) == len(results) else "-"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--records", type=int, default=200_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--max-batch", type=int, default=10_000)
    parser.add_argument("--no-write", action="store_true", help="Print only; leave docs/benchmarks.md alone.")
    args = parser.parse_args(argv)

    worker_imports = [import_probe(WORKER_MODULES) for _ in range(args.rounds)]
    cli_imports = [import_probe(CLI_MODULES) for _ in range(args.rounds)]

    workdir = Path(tempfile.mkdtemp(prefix="streamml-bench-"))
    settings = load_settings()
    broker = None
    if not settings.bootstrap:
        broker = LocalBroker(Settings(home=workdir / "broker", broker_port=0, controller_port=0))
        settings = Settings(bootstrap=broker.start().bootstrap, home=workdir / "home")
    passthrough: list[ScenarioResult] = []
    scoring: list[ScenarioResult] = []
    try:
        model = data.train_model(workdir)
        bench = scenarios.Bench(settings, model, workdir, max_batch=args.max_batch)
        source = bench.name("in")
        data.fill_topic(bench.config, bench.admin, source, data.input_table(args.records))
        for round_no in range(args.rounds):
            print(f"round {round_no + 1}/{args.rounds}", file=sys.stderr, flush=True)
            passthrough.append(scenarios.passthrough(bench, source, args.records))
            scoring.append(scenarios.streamml_scoring(bench, source, args.records))
        bench.drop_topics(source)
    finally:
        if broker is not None:
            broker.stop()
        shutil.rmtree(workdir, ignore_errors=True)

    rows = [
        ["import only: benchmark worker (child + Runner)", _imported(worker_imports), "-"],
        ["import only: `streamml run` (CLI + Runner)", _imported(cli_imports), "-"],
        ["(a) passthrough, exactly-once", _peak(passthrough), _rate(passthrough)],
        ["(b) streamml PREDICT, 1 worker, exactly-once", _peak(scoring), _rate(scoring)],
    ]
    header = ["worker", "peak RSS MiB", "records/s"]
    print(table(header, rows))
    load = os.getloadavg()[0]
    if not args.no_write:
        body = table(header, rows) + (
            f"\n\n{args.records:,} simulated transactions (~800 bytes of JSON each) in 2 partitions, batches of up "
            f"to {args.max_batch:,}; median of {args.rounds} rounds, the largest in brackets. Each worker is its "
            "own process (`python -m streamml.bench.child`), its peak RSS is `VmHWM` once it has processed the "
            "whole input. Import only: a fresh interpreter that imports what that worker imports and nothing "
            "else; file-backed is the part of its RSS that is pages of shared libraries (`RssFile`), which every "
            f"process running them shares. The machine was shared with other work (1-minute load average {load:.1f} on "
            f"{os.cpu_count()} cores at the end)."
        )
        command = "python -m benchmarks.worker_memory " + " ".join(argv if argv is not None else sys.argv[1:])
        write_section("worker-memory", "Memory of a worker", body, command.strip())


if __name__ == "__main__":
    main()
