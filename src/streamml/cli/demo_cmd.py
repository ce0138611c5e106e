"""``streamml demo``: end-to-end scenarios on the local broker (or the configured cluster)."""

from __future__ import annotations

import typer
from rich.console import Console

from streamml.cli.state import state
from streamml.demos.smoke import run_smoke
from streamml.errors import StreamMLError

app = typer.Typer(help="Run an end-to-end scenario.", no_args_is_help=False, invoke_without_command=True)
out = Console(highlight=False)


@app.callback()
def demo(ctx: typer.Context) -> None:
    """Run an end-to-end scenario (default: smoke)."""
    if ctx.invoked_subcommand is None:
        ctx.invoke(smoke, ctx=ctx)


@app.command()
def smoke(ctx: typer.Context, events: int = typer.Option(50_000, min=1, help="How many events.")) -> None:
    """Produce events, copy them exactly-once through a transaction, read them back, check every one."""
    report = run_smoke(state(ctx).settings, events, say=lambda line: out.print(f"• {line}"))
    if not report.ok:
        raise StreamMLError(
            f"smoke pipeline lost or duplicated events: produced {report.produced}, copied {report.copied}, "
            f"read {report.read_back}, distinct {report.unique_ids}"
        )
    out.print(f"[bold green]ok[/]: {report.produced:,} events, each exactly once, on {report.bootstrap}")
