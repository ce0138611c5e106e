"""``streamml status``: every running worker of the deployment, with its queries' rates, lag and versions."""

from __future__ import annotations

import orjson
import typer
from rich.console import Console
from rich.table import Table

from streamml.cli.state import state
from streamml.runtime.observe import is_alive, last_seen, read_status

out = Console(highlight=False)


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


def status(
    ctx: typer.Context, as_json: bool = typer.Option(False, "--json", help="One JSON object per worker.")
) -> None:
    """Running queries with their rates, lag, latency, model versions, refusals and errors."""
    workers = read_status(state(ctx).settings)
    if not workers:
        out.print("no runner is running (start one with 'streamml run')")
        raise typer.Exit(1)
    if as_json:
        for worker in workers:
            print(orjson.dumps(worker).decode())
        return
    table = Table("worker", "query", "state", "in/s", "in", "out", "dead", "lag", "p50 ms", "p99 ms", "models")
    problems = []
    for worker in sorted(workers, key=lambda w: str(w.get("worker"))):
        alive = is_alive(worker)
        name = f"{worker['worker']}" + ("" if alive else f" [dim](last seen {last_seen(worker)})[/]")
        for q in worker.get("queries", []):
            lag = sum(int(v) for v in q.get("lag", {}).values())
            models = ", ".join(f"{k}→{v}" for k, v in q.get("model_versions", {}).items()) or "-"
            counts = [f"{q[k]:,}" for k in ("records_in", "records_out", "dead_letters")]
            latency = [_ms(q.get("latency_p50_ms")), _ms(q.get("latency_p99_ms"))]
            state_ = q["state"] if alive else "NOT RUNNING"
            table.add_row(name, q["query"], state_, f"{q['rate_in']:,.0f}", *counts, f"{lag:,}", *latency, models)
            if q.get("error"):
                problems.append(f"{q['query']} on {worker['worker']}: {q['error']}")
        problems += [f"{worker['worker']}: {r}" for r in worker.get("refusals", [])]
    out.print(table)
    for problem in problems:
        out.print(f"[yellow]•[/] {problem}", markup=True)
