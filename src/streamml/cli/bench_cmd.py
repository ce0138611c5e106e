"""``streamml bench``: the end-to-end and SQL benchmarks side by side, printed and written to the docs."""

from __future__ import annotations

import sys
import time

import typer
from rich.console import Console
from rich.table import Table

from streamml.cli.state import state
from streamml.kafka import LocalBroker

out = Console(highlight=False, width=None if sys.stdout.isatty() else 200)
err = Console(stderr=True, highlight=False)


def bench(
    ctx: typer.Context,
    quick: bool = typer.Option(False, "--quick", help="100k records, one round, 10 s latency run: a few minutes."),
    records: int | None = typer.Option(None, "--records", min=100, help="Input records per scenario."),
    rounds: int | None = typer.Option(None, "--rounds", min=1, help="Alternating rounds; medians are reported."),
    suite: str = typer.Option("all", "--suite", help="all, pipeline or sql."),
    quix_python: str | None = typer.Option(
        None, "--quix-python", help="Interpreter with quixstreams for the peer (default: found automatically)."
    ),
    no_write: bool = typer.Option(False, "--no-write", help="Print only; leave docs/benchmarks.md alone."),
) -> None:
    """Measure streamml against a passthrough, a per-message loop, Quix Streams and the model alone."""
    from streamml.bench import SuiteOptions, run_suite
    from streamml.bench.docs import write
    from streamml.bench.suite import PIPELINE_HEADER, SQL_HEADER, pipeline_rows, sql_rows, target_rows

    if suite not in ("all", "pipeline", "sql"):
        raise typer.BadParameter("use all, pipeline or sql", param_hint="--suite")
    settings = state(ctx).settings
    if not settings.bootstrap:
        info = LocalBroker(settings).start()
        settings = settings.model_copy(update={"bootstrap": info.bootstrap})
    sizes = {k: v for k, v in {"records": records, "rounds": rounds}.items() if v is not None}
    flags = {"pipeline": suite != "sql", "sql": suite != "pipeline", "quix_python": quix_python}
    options = SuiteOptions.quick(**sizes, **flags) if quick else SuiteOptions(**sizes, **flags)  # type: ignore[arg-type]
    started = time.monotonic()
    report = run_suite(settings, options, progress=lambda msg: err.print(f"[dim]{msg}[/]"))
    if options.pipeline:
        out.print(_table("End-to-end scoring pipeline", PIPELINE_HEADER, pipeline_rows(report)))
    if options.sql:
        out.print(_table("Streaming SQL", SQL_HEADER, sql_rows(report)))
    out.print(_table("Targets", ["target", "measured", "met"], target_rows(report)))
    err.print(f"[dim]{time.monotonic() - started:.0f} s[/]")
    if not no_write:
        command = "streamml " + " ".join(sys.argv[1:]) if sys.argv[1:] else "streamml bench"
        doc = write(report, command)
        err.print(f"wrote {doc}")


def _table(title: str, header: list[str], rows: list[list[str]]) -> Table:
    table = Table(title=title, title_justify="left")
    for i, name in enumerate(header):
        table.add_column(name, justify="left" if i == 0 or name in ("status", "met", "target") else "right")
    for row in rows:
        style = "red" if row[-1].startswith(("FAILED", "NO")) else "yellow" if row[-1].startswith("SKIPPED") else None
        table.add_row(*row, style=style)
    return table
