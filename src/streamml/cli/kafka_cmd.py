"""``streamml kafka``: the local broker's lifecycle."""

from __future__ import annotations

import time

import typer
from rich.console import Console

from streamml.cli.state import state
from streamml.errors import BrokerError
from streamml.kafka import LocalBroker

app = typer.Typer(help="Run the local single-node Apache Kafka broker (KRaft).", no_args_is_help=True)
out = Console(highlight=False)


def _broker(ctx: typer.Context) -> LocalBroker:
    settings = state(ctx).settings
    if settings.bootstrap:
        raise BrokerError(
            f"a cluster is configured ({settings.bootstrap}); the local broker is not used",
            hint="unset STREAMML_BOOTSTRAP to manage the local broker",
        )
    return LocalBroker(settings)


@app.command()
def start(ctx: typer.Context, timeout: float = typer.Option(90.0, help="Seconds to wait for readiness.")) -> None:
    """Start the broker (resolving its jars with Maven on first use) and print its bootstrap address."""
    broker = _broker(ctx)
    with out.status("starting Apache Kafka ..."):
        info = broker.start(timeout_s=timeout)
    verb = "already running" if info.already_running else "started"
    out.print(f"Kafka {info.version} {verb} at [bold]{info.bootstrap}[/] (pid {info.pid})")
    out.print(info.bootstrap or "", markup=False, style="dim")


@app.command()
def install(ctx: typer.Context) -> None:
    """Resolve the broker jars with Maven into the cache (done by ``start`` on first use too)."""
    with out.status("resolving Apache Kafka jars with Maven ..."):
        path = LocalBroker(state(ctx).settings).ensure_jars()
    out.print(f"Kafka jars ready in {path}")


@app.command()
def stop(ctx: typer.Context, timeout: float = typer.Option(30.0, help="Seconds before a forced kill.")) -> None:
    """Stop the broker gracefully, forcibly after the timeout."""
    if _broker(ctx).stop(timeout_s=timeout):
        out.print("Kafka stopped")
    else:
        out.print("Kafka was not running")


@app.command()
def status(ctx: typer.Context) -> None:
    """Say whether the broker runs, where, and since when. Exits 1 when it is not running."""
    info = _broker(ctx).status()
    if not info.running:
        out.print(f"Kafka is not running (home {info.home})")
        raise typer.Exit(1)
    uptime = time.time() - (info.started_at or time.time())
    out.print(f"Kafka {info.version} running at [bold]{info.bootstrap}[/] (pid {info.pid}, up {uptime:.0f} s)")


@app.command()
def logs(
    ctx: typer.Context,
    lines: int = typer.Option(50, "--lines", "-n", help="How many lines to show."),
    follow: bool = typer.Option(False, "--follow", "-f", help="Keep printing new lines."),
) -> None:
    """Show the broker log."""
    broker = _broker(ctx)
    text = broker.tail(lines)
    if text:
        print(text)
    if not follow:
        return
    with broker.log_file.open(errors="replace") as f:
        f.seek(0, 2)
        while True:
            line = f.readline()
            if line:
                print(line, end="", flush=True)
            else:
                time.sleep(0.2)
