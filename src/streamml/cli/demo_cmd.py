"""``streamml demo``: end-to-end scenarios on the local broker (or the configured cluster)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import typer
from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from streamml.cli.state import state
from streamml.demos.digits import DigitsConfig, DigitsDemo, DigitsStats
from streamml.demos.fraud import DemoConfig, FraudDemo, LiveStats
from streamml.demos.maintenance import MaintenanceConfig, MaintenanceDemo, MaintenanceStats
from streamml.demos.smoke import run_smoke
from streamml.errors import StreamMLError
from streamml.kafka import LocalBroker
from streamml.kafka.mosquitto import LocalMosquitto

app = typer.Typer(help="Run an end-to-end scenario.", no_args_is_help=True)
out = Console(highlight=False)


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


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f} ms"


def _view(stats: LiveStats) -> Panel:
    def pct(x: float | None) -> str:
        return "-" if x is None else f"{x:.1%}"

    table = Table.grid(padding=(0, 3))
    table.add_row("elapsed", f"{stats.elapsed_s:5.1f} s", "model", stats.model)
    table.add_row("live produced", f"{stats.produced:,}", "live scored", f"{stats.scored:,}")
    table.add_row("scoring rate", f"{stats.rate:,.0f} rec/s", "alerts", f"{stats.alerts:,}")
    table.add_row("latency p50", _ms(stats.p50_ms), "latency p99", _ms(stats.p99_ms))
    q = stats.quality or {}
    window = f"window ending {q['window_end_ms']}, {q['labelled']:,} labelled" if q else "waiting for labels"
    table.add_row(
        "monitor", window, "drift PSI max", "-" if q.get("drift_psi_max") is None else f"{q['drift_psi_max']:.2f}"
    )
    table.add_row("precision (monitor)", pct(q.get("precision")), "recall (monitor)", pct(q.get("recall")))
    table.add_row("F1 (monitor)", pct(q.get("f1")), "PR AUC (monitor)", pct(q.get("pr_auc")))
    parts: list[RenderableType] = [table]
    parts += [Text(message, style="yellow") for message in stats.monitor_alerts[-3:]]
    parts += [Text(f"retraining: {step}", style="green") for step in stats.retraining[-3:]]
    return Panel(Group(*parts), title="live fraud scoring", border_style="cyan")


@app.command()
def fraud(
    ctx: typer.Context,
    history: int = typer.Option(100_000, min=1_000, help="Historical transactions to train on."),
    live_seconds: float = typer.Option(40.0, min=1.0, help="How long live traffic streams."),
    rate: float = typer.Option(2_000.0, min=1.0, help="Live transactions per second."),
    fraud_rate: float = typer.Option(0.002, min=0.0001, max=0.5, help="Share of frauds in the history."),
    output: Path = typer.Option(Path("demo-output"), "--output", "-o", help="Folder for the report and plots."),
    quick: bool = typer.Option(False, "--quick", help="Small sizes: about a minute."),
    stop_broker: bool = typer.Option(False, "--stop-broker", help="Stop the local broker at the end."),
) -> None:
    """Stream, preprocess with SQL, train, promote, score live exactly-once, and report — the whole loop."""
    settings = state(ctx).settings
    if quick:
        history, live_seconds, rate = min(history, 20_000), min(live_seconds, 10.0), min(rate, 1_000.0)
        fraud_rate = max(fraud_rate, 0.01)
    config = DemoConfig(history=history, live_seconds=live_seconds, live_rate=rate, output_dir=output,
                        fraud_rate=fraud_rate, epochs=15 if quick else DemoConfig.epochs)  # fmt: skip
    demo = FraudDemo(settings, config, say=lambda line: out.print(f"• {line}", markup=False))
    steps: list[tuple[str, Callable[[], object]]] = [
        ("starting the broker ...", demo.start),
        ("streaming historical transactions ...", demo.stream_history),
        ("preprocessing with SQL ...", demo.preprocess),
        ("training from the preprocessed stream ...", demo.train),
        ("", demo.deploy),
    ]
    stops: list[Callable[[], object]] = [LocalBroker(settings).stop] if stop_broker and not settings.bootstrap else []
    _run(demo, steps, lambda stats: _view(stats or LiveStats()), stops)


def _maintenance_view(stats: MaintenanceStats) -> Panel:
    def num(x: float | None, digits: int = 3) -> str:
        return "-" if x is None else f"{x:.{digits}f}"

    table = Table.grid(padding=(0, 3))
    table.add_row("elapsed", f"{stats.elapsed_s:5.1f} s", "model", stats.model)
    table.add_row("readings published", f"{stats.produced:,}", "scored", f"{stats.scored:,}")
    table.add_row("scoring rate", f"{stats.rate:,.0f} rec/s", "lag", f"{stats.lag:,}")
    table.add_row("latency p50", num(stats.p50_ms, 1) + " ms", "latency p99", num(stats.p99_ms, 1) + " ms")
    table.add_row("alerts", f"{stats.alerts:,}", "failures", f"{stats.failures:,}")
    table.add_row("precision (live)", num(stats.precision), "recall (live)", num(stats.recall))
    table.add_row("F1 (live)", num(stats.f1), "lead time (median)", num(stats.lead_time_median, 1) + " readings")
    return Panel(Group(table), title="live failure prediction", border_style="cyan")


@app.command()
def maintenance(
    ctx: typer.Context,
    cars: int = typer.Option(25, min=1, help="Cars in the fleet."),
    history_steps: int = typer.Option(MaintenanceConfig.history_steps, min=100, help="Readings per car to train on."),
    live_seconds: float = typer.Option(30.0, min=1.0, help="How long live readings stream."),
    rate: float = typer.Option(500.0, min=1.0, help="Live readings per second (all cars)."),
    epochs: int = typer.Option(25, min=1, help="Training epochs."),
    failure_rate: float = typer.Option(
        MaintenanceConfig.failure_rate, min=0.0, max=0.2, help="Chance per reading that each failure mode starts."
    ),
    output: Path = typer.Option(Path("maintenance-output"), "--output", "-o", help="Folder for the report."),
    stop_broker: bool = typer.Option(False, "--stop-broker", help="Stop Mosquitto and the local Kafka at the end."),
) -> None:
    """Cars over MQTT, bridge, SQL, a sequence model trained from the topic and scored per car, and a report."""
    settings = state(ctx).settings
    config = MaintenanceConfig(cars=cars, history_steps=history_steps, live_seconds=live_seconds, live_rate=rate,
                               epochs=epochs, failure_rate=failure_rate, output_dir=output)  # fmt: skip
    demo = MaintenanceDemo(settings, config, say=lambda line: out.print(f"• {line}", markup=False))
    steps: list[tuple[str, Callable[[], object]]] = [
        ("starting Kafka, Mosquitto and the bridge ...", demo.start),
        ("publishing the fleet's history over MQTT ...", demo.stream_history),
        ("running the KSQL ...", demo.preprocess),
        ("training from the re-keyed stream ...", demo.train),
        ("scoring the history ...", demo.deploy),
    ]
    stops: list[Callable[[], object]] = [LocalMosquitto(settings).stop] if stop_broker else []
    if stop_broker and not settings.bootstrap:
        stops.append(LocalBroker(settings).stop)
    _run(demo, steps, lambda stats: _maintenance_view(stats or MaintenanceStats()), stops)


def _digits_view(stats: DigitsStats) -> Panel:
    table = Table.grid(padding=(0, 3))
    table.add_row("elapsed", f"{stats.elapsed_s:5.1f} s", "model", stats.model)
    table.add_row("questions asked", f"{stats.produced:,}", "answered", f"{stats.scored:,}")
    table.add_row("answers per second", f"{stats.rate:,.0f}", "timeouts", f"{stats.timeouts:,}")
    table.add_row("latency p50", _ms(stats.p50_ms), "latency p99", _ms(stats.p99_ms))
    table.add_row("accuracy", "-" if stats.accuracy is None else f"{stats.accuracy:.1%}", "", "")
    parts: list[RenderableType] = [table, *(Text(line, style="green") for line in stats.recent)]
    return Panel(Group(*parts), title="digits: questions and answers over Kafka", border_style="cyan")


@app.command()
def digits(
    ctx: typer.Context,
    size: int = typer.Option(28, min=8, max=256, help="Pixels per side of each picture."),
    epochs: int = typer.Option(30, min=1, help="Training epochs (early stopping may end sooner)."),
    dont_train: bool = typer.Option(False, "--dont-train", help="Evaluate the saved model instead of training."),
    live_seconds: float = typer.Option(20.0, min=1.0, help="How long the callers ask."),
    callers: int = typer.Option(8, min=1, max=256, help="Callers asking at once, each awaiting its answer."),
    output: Path = typer.Option(Path("digits-output"), "--output", "-o", help="Folder for the report and plots."),
    stop_broker: bool = typer.Option(False, "--stop-broker", help="Stop the local broker at the end."),
) -> None:
    """Pictures to a topic, a CNN trained from it, the model as a query, questions and answers over Kafka."""
    settings = state(ctx).settings
    config = DigitsConfig(size=size, epochs=epochs, dont_train=dont_train, live_seconds=live_seconds,
                          callers=callers, output_dir=output)  # fmt: skip
    demo = DigitsDemo(settings, config, say=lambda line: out.print(f"• {line}", markup=False))
    steps: list[tuple[str, Callable[[], object]]] = [("starting the broker ...", demo.start)]
    if not dont_train:
        steps.append(("writing labelled pictures ...", demo.write_pictures))
    steps += [("training from the topic ..." if not dont_train else "", demo.train), ("", demo.deploy)]
    stops: list[Callable[[], object]] = [LocalBroker(settings).stop] if stop_broker and not settings.bootstrap else []
    _run(demo, steps, lambda stats: _digits_view(stats or DigitsStats()), stops)


def _run(
    demo: FraudDemo | MaintenanceDemo | DigitsDemo,
    steps: list[tuple[str, Callable[[], object]]],
    view: Callable[[Any], Panel],
    stops: list[Callable[[], object]],
) -> None:
    """Run a demo's steps (each under its status line), its live phase with ``view``, and its report; stop it
    cleanly whatever happens, then call ``stops`` (the brokers to stop)."""
    stop = threading.Event()
    started = time.perf_counter()
    try:
        for status, step in steps:
            if status:
                with out.status(status):
                    step()
            else:
                step()
        with Live(view(None), console=out, refresh_per_second=4) as live:
            demo.run_live(lambda stats: live.update(view(stats)), stop)
        if not out.is_terminal:
            out.line()  # off a terminal the last view ends without a line break
        path = demo.report()
    except KeyboardInterrupt:
        stop.set()
        out.print("[yellow]interrupted: stopping the queries cleanly[/]")
        raise
    finally:
        demo.close()
        for stop_broker in stops:
            stop_broker()
    out.print(f"[bold green]done[/] in {time.perf_counter() - started:.0f} s — report: {path}")
