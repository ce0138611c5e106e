"""``streamml dashboard``: the monitor's live web page on this machine, until Ctrl-C."""

from __future__ import annotations

from typing import Any

import typer

from streamml.cli.state import state


def dashboard(
    ctx: typer.Context,
    port: int = typer.Option(8050, "--port", min=0, max=65535, help="Port to listen on (0 picks a free one)."),
    host: str = typer.Option("127.0.0.1", "--host", help="Interface to listen on."),
    metrics_topic: str | None = typer.Option(None, "--metrics-topic", help="Windows topic (default: the monitor's)."),
    alerts_topic: str | None = typer.Option(None, "--alerts-topic", help="Alerts topic (default: the monitor's)."),
    control_topic: str | None = typer.Option(None, "--control-topic", help="Control topic (default: the shared one)."),
) -> None:
    """Serve a read-only page with quality, drift, throughput, lag, latency, alerts and model events."""
    from streamml.monitor.dashboard import Dashboard

    topics: dict[str, Any] = {"metrics_topic": metrics_topic, "alerts_topic": alerts_topic,
                              "control_topic": control_topic}  # fmt: skip
    board = Dashboard(state(ctx).settings, host, port, **{k: v for k, v in topics.items() if v})
    typer.echo(f"dashboard: {board.url} (Ctrl-C to stop)")
    board.run()
