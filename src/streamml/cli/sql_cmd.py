"""``streamml sql`` (statements, prompt) and ``streamml run`` (persistent queries of a file, until stopped)."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pyarrow as pa
import typer
from rich.console import Console
from rich.table import Table

from streamml.cli.state import state
from streamml.errors import InputError, SqlError
from streamml.formats import get_format
from streamml.runtime.options import Guarantee, RuntimeOptions
from streamml.runtime.runner import Runner
from streamml.runtime.session import Outcome, Session
from streamml.sql import ast as sql_ast

out = Console(highlight=False)
err = Console(stderr=True, highlight=False)
log = logging.getLogger(__name__)


def print_rows(table: pa.Table, output: str) -> None:
    """Rows as a Rich table on a terminal, JSON lines otherwise."""
    if output == "jsonl":
        lines = get_format("json").encode(table)
        if lines:
            sys.stdout.buffer.write(b"\n".join(lines) + b"\n")
            sys.stdout.flush()
        return
    view = Table(*table.column_names)
    for row in table.to_pylist():
        view.add_row(*("" if v is None else str(v) for v in row.values()))
    out.print(view)


def show(outcome: Outcome) -> None:
    if outcome.rows is not None:  # the rows were printed as they came
        err.print(f"{outcome.rows.num_rows} rows")
    elif outcome.result.kind == "TEXT":
        out.print(outcome.message, markup=False)
    else:
        out.print(f"[green]{outcome.message}[/]")
        if outcome.result.query_id is not None:
            err.print(f"[dim]persistent query {outcome.result.query_id}: 'streamml run' executes it[/]")


def sql(
    ctx: typer.Context,
    execute: str | None = typer.Option(None, "--execute", "-e", help="Run these statements and exit."),
    file: Path | None = typer.Option(None, "--file", "-f", help="Run the statements of this file and exit."),
    output: str | None = typer.Option(None, "--output", "-o", help="table | jsonl (default: table on a tty)."),
    limit: int | None = typer.Option(None, "--limit", "-n", help="Stop push queries after this many rows."),
) -> None:
    """Run KSQL statements; without -e/-f, an interactive prompt (statements end with ';')."""
    output = (output or ("table" if out.is_terminal else "jsonl")).lower()
    from streamml.monitor.statements import MONITOR_STATEMENTS

    session = Session(state(ctx).settings, statements=MONITOR_STATEMENTS)
    text = execute if execute is not None else _read(file) if file is not None else None
    if text is not None:
        run_text(session, text, output, limit)
        return
    prompt(session, output, limit, state(ctx).settings.home)


def run_text(session: Session, text: str, output: str, limit: int | None) -> None:
    def stream(rows: pa.Table) -> None:
        print_rows(rows, output)

    try:
        for outcome in session.execute(text, push_limit=limit, on_rows=stream):
            show(outcome)
    except KeyboardInterrupt:
        err.print("[yellow]query stopped[/]")


def prompt(session: Session, output: str, limit: int | None, home: Path) -> None:
    """A read-eval-print loop with history (readline)."""
    try:
        import readline

        history = home / "sql_history"
        history.parent.mkdir(parents=True, exist_ok=True)
        if history.exists():
            readline.read_history_file(history)
    except (ImportError, OSError):
        readline = None  # type: ignore[assignment]
    out.print("streamml sql: statements end with ';'; Ctrl-D quits, Ctrl-C stops a push query.")
    buffer: list[str] = []
    while True:
        try:
            line = input("streamml> " if not buffer else "      ...> ")
        except EOFError:
            break
        except KeyboardInterrupt:
            buffer = []
            out.print()
            continue
        buffer.append(line)
        text = "\n".join(buffer).strip()
        if not text.endswith(";"):
            continue
        buffer = []
        try:
            session.refresh()
            run_text(session, text, output, limit)
        except SqlError as exc:
            err.print(f"[bold red]error:[/] {exc}", markup=True)
    if readline is not None:
        readline.write_history_file(history)


def _read(file: Path) -> str:
    if not file.is_file():
        raise InputError(f"SQL file '{file}' does not exist")
    return file.read_text()


def run(
    ctx: typer.Context,
    file: Path | None = typer.Argument(None, help="Pipeline file; without it, every query in the catalog runs."),
    workers: int = typer.Option(1, "--workers", "-w", min=1, help="Worker processes sharing the partitions."),
    max_batch: int = typer.Option(10_000, "--max-batch", min=1, help="Largest micro-batch in records."),
    max_wait_ms: int = typer.Option(100, "--max-wait-ms", min=1, help="Micro-batch deadline under light load."),
    at_least_once: bool = typer.Option(False, "--at-least-once", help="No transactions: lowest latency."),
    metrics_port: int | None = typer.Option(None, "--metrics-port", help="Serve Prometheus /metrics here."),
    on_error: list[str] = typer.Option(
        [], "--on-error", help="STAGE=POLICY, repeatable: decode|evaluate|predict|produce = dead-letter|skip|fail."
    ),
) -> None:
    """Apply a pipeline file (again: a no-op) and run its persistent queries until SIGINT/SIGTERM."""
    policies = RuntimeOptions.policies(on_error)
    settings = state(ctx).settings
    only: list[str] | None = None
    if file is not None:
        from streamml.monitor.statements import MONITOR_STATEMENTS

        session = Session(settings, statements=MONITOR_STATEMENTS)
        outcomes = session.execute(_read(file), idempotent=True)
        only = _query_ids(session, outcomes)
        for outcome in outcomes:
            if not outcome.skipped:
                err.print(f"[green]{outcome.message}[/]")
        if not only:
            raise InputError(f"'{file}' defines no persistent query", hint="add CREATE STREAM ... AS SELECT ...")
    options = RuntimeOptions(
        max_batch=max_batch,
        max_wait_ms=max_wait_ms,
        guarantee=Guarantee.AT_LEAST_ONCE if at_least_once else Guarantee.EXACTLY_ONCE,
    ).model_copy(update=policies)
    children = _spawn_workers(workers - 1, settings.worker_id)
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    runner = Runner(settings, options, only=only, metrics_port=metrics_port)
    names = ", ".join(only) if only else "every query in the catalog"
    err.print(f"running {names} ({workers} worker{'s' if workers > 1 else ''}); Ctrl-C stops")
    try:
        runner.run(stop)
    finally:
        for child in children:
            child.send_signal(signal.SIGTERM)
        for child in children:
            child.wait(60)
    err.print("stopped: every batch committed")


def _query_ids(session: Session, outcomes: list[Outcome]) -> list[str]:
    ids = []
    for outcome in outcomes:
        stmt = outcome.result.statement
        if outcome.result.query_id is not None:
            ids.append(outcome.result.query_id)
        elif isinstance(stmt, sql_ast.CreateAsSelect | sql_ast.InsertInto):
            target = stmt.name if isinstance(stmt, sql_ast.CreateAsSelect) else stmt.target
            ids += [
                qid for qid, plan in session.engine.queries.items()
                if plan.sink is not None and plan.sink.name.upper() == target.upper()
            ]  # fmt: skip
    return list(dict.fromkeys(ids))


def _spawn_workers(count: int, worker_id: str) -> list[subprocess.Popen[bytes]]:
    """Start ``count`` more processes running the same command with one worker each."""
    if count <= 0:
        return []
    argv = [a for a in sys.argv if not a.startswith("--workers=")]
    if "--workers" in argv or "-w" in argv:
        i = argv.index("--workers") if "--workers" in argv else argv.index("-w")
        del argv[i : i + 2]
    return [
        subprocess.Popen(
            [sys.executable, "-m", "streamml.cli.app", *argv[1:]],
            env={**os.environ, "STREAMML_WORKER_ID": f"{worker_id}.{slot}"},
        )
        for slot in range(1, count + 1)
    ]
