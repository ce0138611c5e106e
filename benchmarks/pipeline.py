"""End-to-end scoring: streamml's PREDICT query against a passthrough, the per-message loop of the reference
demos, Quix Streams and the model alone, side by side in one run (library code: ``streamml.bench``).

    .venv/bin/python -m benchmarks.pipeline --records 100000 --rounds 3
    .venv/bin/python -m benchmarks.pipeline --quick --no-write

The local broker is started unless STREAMML_BOOTSTRAP names a cluster. Quix Streams runs from the interpreter
in STREAMML_BENCH_QUIX_PYTHON, this one, or ~/.cache/streamml/quix-venv (it pins older confluent-kafka and
pydantic releases than streamml, so give it an environment of its own).
"""

from __future__ import annotations

import argparse
import sys

from benchmarks.report import table, write_section
from streamml.bench import SuiteOptions, run_suite, sections
from streamml.bench.suite import PIPELINE_HEADER, SQL_HEADER, pipeline_rows, sql_rows, target_rows
from streamml.config import load_settings
from streamml.kafka import LocalBroker


def main(suite: str = "pipeline", argv: list[str] | None = None, doc: str | None = None) -> None:
    parser = argparse.ArgumentParser(description=doc or __doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="30k records, one round, 10 s latency run")
    parser.add_argument("--records", type=int)
    parser.add_argument("--rounds", type=int)
    parser.add_argument("--no-write", action="store_true", help="Print only; leave docs/benchmarks.md alone.")
    args = parser.parse_args(argv)
    settings = load_settings()
    if not settings.bootstrap:
        settings = settings.model_copy(update={"bootstrap": LocalBroker(settings).start().bootstrap})
    sizes = {k: v for k, v in {"records": args.records, "rounds": args.rounds}.items() if v is not None}
    flags = {"pipeline": suite == "pipeline", "sql": suite == "sql"}
    options = SuiteOptions.quick(**sizes, **flags) if args.quick else SuiteOptions(**sizes, **flags)  # type: ignore[arg-type]
    report = run_suite(settings, options, progress=lambda msg: print(msg, file=sys.stderr, flush=True))
    if options.pipeline:
        print(table(PIPELINE_HEADER, pipeline_rows(report)))
    if options.sql:
        print(table(SQL_HEADER, sql_rows(report)))
    print(table(["target", "measured", "met"], target_rows(report)))
    if not args.no_write:
        command = f"python -m benchmarks.{'pipeline' if suite == 'pipeline' else 'sql_queries'} " + " ".join(
            argv if argv is not None else sys.argv[1:]
        )
        for section in sections(report):
            write_section(section.name, section.title, section.body, command.strip())


if __name__ == "__main__":
    main("pipeline")
