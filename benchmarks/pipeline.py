"""End-to-end scoring: streamml's PREDICT query against a passthrough, the per-message loop of the reference
demos, Quix Streams and the model alone, side by side in one run (library code: ``streamml.bench``).

    .venv/bin/python -m benchmarks.pipeline --records 100000 --rounds 3
    .venv/bin/python -m benchmarks.pipeline --quick --no-write
    .venv/bin/python -m benchmarks.pipeline --latency-only --rounds 3   # the latency rows and their stages

The local broker is started unless STREAMML_BOOTSTRAP names a cluster. Quix Streams runs from the interpreter
in STREAMML_BENCH_QUIX_PYTHON, this one, or ~/.cache/streamml/quix-venv (it pins older confluent-kafka and
pydantic releases than streamml, so give it an environment of its own).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from dataclasses import replace

from benchmarks.cluster import bench_settings
from benchmarks.report import replace_rows, table, write_section
from streamml.bench import SuiteOptions, run_suite, sections
from streamml.bench.suite import (
    LATENCY,
    LATENCY_ALO,
    LATENCY_EOS,
    PIPELINE,
    PIPELINE_HEADER,
    SQL_HEADER,
    SuiteReport,
    pipeline_rows,
    sql_rows,
    stage_header,
    stage_rows,
    target_rows,
)
from streamml.config import Settings


def main(suite: str = "pipeline", argv: list[str] | None = None, doc: str | None = None) -> None:
    parser = argparse.ArgumentParser(description=doc or __doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="30k records, one round, 10 s latency run")
    parser.add_argument("--records", type=int)
    parser.add_argument("--rounds", type=int)
    parser.add_argument("--no-write", action="store_true", help="Print only; leave docs/benchmarks.md alone.")
    parser.add_argument(
        "--latency-only",
        action="store_true",
        help="Only the steady-rate latency scenarios, each --rounds times; rewrites only their rows and stage table.",
    )
    args = parser.parse_args(argv)
    with bench_settings() as settings:
        _run(suite, args, argv, settings)


def _run(suite: str, args: argparse.Namespace, argv: list[str] | None, settings: Settings) -> None:
    sizes = {k: v for k, v in {"records": args.records, "rounds": args.rounds}.items() if v is not None}
    flags: dict[str, object] = {"pipeline": suite == "pipeline", "sql": suite == "sql"}
    if args.latency_only:
        flags["skip"] = frozenset(k for k in PIPELINE if k not in LATENCY)
    options = SuiteOptions.quick(**sizes, **flags) if args.quick else SuiteOptions(**sizes, **flags)

    def progress(msg: str) -> None:
        print(msg, file=sys.stderr, flush=True)

    if args.latency_only:
        report = _latency_rounds(settings, options, progress)
        print(table(PIPELINE_HEADER, pipeline_rows(report)))
        print(table(stage_header(report), stage_rows(report)))
        if not args.no_write:
            command = "python -m benchmarks.pipeline " + " ".join(argv if argv is not None else sys.argv[1:])
            replace_rows("pipeline", pipeline_rows(report), table(stage_header(report), stage_rows(report)), command)
        return
    report = run_suite(settings, options, progress=progress)
    if options.pipeline:
        print(table(PIPELINE_HEADER, pipeline_rows(report)))
        print(table(stage_header(report), stage_rows(report)))
    if options.sql:
        print(table(SQL_HEADER, sql_rows(report)))
    print(table(["target", "measured", "met"], target_rows(report)))
    if not args.no_write:
        command = f"python -m benchmarks.{'pipeline' if suite == 'pipeline' else 'sql_queries'} " + " ".join(
            argv if argv is not None else sys.argv[1:]
        )
        for section in sections(report):
            write_section(section.name, section.title, section.body, command.strip())


def _latency_rounds(settings: Settings, options: SuiteOptions, progress: Callable[[str], None]) -> SuiteReport:
    """The latency scenarios ``options.rounds`` times, side by side in each round; medians over the rounds."""
    report: SuiteReport | None = None
    progress("warming the broker up (not reported)")  # a freshly started broker would slow the first scenario
    run_suite(settings, replace(options, latency_s=5.0, skip=options.skip | {LATENCY_EOS, LATENCY_ALO}))
    for round_no in range(options.rounds):
        progress(f"latency round {round_no + 1}/{options.rounds}")
        one = run_suite(settings, options, progress=progress)
        progress("  " + "; ".join(f"{k}: p50 {s.p50_ms} p99 {s.p99_ms} ms" for k, s in one.summaries.items()))
        if report is None:
            report = one
        else:
            for key, summary in one.summaries.items():
                report.summaries[key].rounds += summary.rounds
    assert report is not None
    return report


if __name__ == "__main__":
    main("pipeline")
