"""``streamml monitor``: define, list, explain, run and remove monitors of models in production."""

from __future__ import annotations

import signal
import threading

import typer
from rich.console import Console
from rich.table import Table

from streamml.cli.state import state
from streamml.errors import InputError

app = typer.Typer(help="Watch models in production: accuracy from late labels, drift, alerts.", no_args_is_help=True)
out = Console(highlight=False, soft_wrap=True)
err = Console(stderr=True, highlight=False, soft_wrap=True)


@app.command("start")
def start(
    ctx: typer.Context,
    model: str = typer.Argument(..., help="The model whose predictions are watched."),
    predictions: str = typer.Option(..., "--predictions", help="Stream of the model's predictions (PREDICT output)."),
    labels: str = typer.Option(..., "--labels", help="Stream of the labels, arriving later."),
    key: str = typer.Option(..., "--key", help="Column joining a prediction with its label."),
    label_key: str | None = typer.Option(None, "--label-key", help="The key column of the labels, if named apart."),
    label_column: str | None = typer.Option(None, "--label-column", help="Label column (default: the card's)."),
    within: str = typer.Option("1 HOUR", "--within", help="How late a label may be, e.g. '30 SECONDS'."),
    window: str = typer.Option("1 MINUTE", "--window", help="Tumbling window the metrics are computed over."),
    grace: str = typer.Option("0 SECONDS", "--grace", help="How far out of order predictions may arrive."),
    name: str | None = typer.Option(None, "--name", help="Monitor name (default: the model's)."),
    prediction: str | None = typer.Option(None, "--prediction", help="SQL expression of the prediction."),
    score: str | None = typer.Option(None, "--score", help="SQL expression of the positive class's score."),
    positive: str | None = typer.Option(None, "--positive", help="The positive class (e.g. 1, true, '>50K')."),
    features: str | None = typer.Option(None, "--features", help="Features to watch for drift: A,B,..."),
    psi: float = typer.Option(0.2, "--psi", min=0.0, help="Drift alert: largest feature PSI above this."),
    accuracy_floor: float = typer.Option(0.8, "--accuracy-floor", min=0.0, max=1.0, help="Accuracy alert floor."),
    detach: bool = typer.Option(False, "--detach", help="Only define it; `streamml monitor run` runs it."),
) -> None:
    """Define a monitor (and run it here until Ctrl-C, unless --detach)."""
    from streamml.monitor.statements import define_monitor, monitor_card
    from streamml.runtime.session import Session

    settings = state(ctx).settings
    if monitor_card(settings, model) is None:
        err.print(f"[yellow]model {model} is not in the registry yet: defaults come from the stream only[/]")
    spec = define_monitor(settings, Session(settings).engine, name=name or model, model=model,
                          predictions=predictions, labels=labels, key=key, label_key=label_key, label=label_column,
                          prediction=prediction, score=score, positive=positive, features=features, window=window,
                          within=within, grace=grace, psi=psi, accuracy_floor=accuracy_floor)  # fmt: skip
    err.print(f"[green]monitor {spec.name} defined[/]: metrics to {spec.metrics_topic}, alerts to {spec.alerts_topic}")
    if not detach:
        _run(ctx, [spec.name], None)


@app.command("run")
def run(
    ctx: typer.Context,
    names: list[str] | None = typer.Argument(None, help="Monitors to run (default: every one defined)."),
    metrics_port: int | None = typer.Option(None, "--metrics-port", min=0, max=65535, help="Prometheus port."),
) -> None:
    """Run the deployment's monitors here until Ctrl-C (run them in one place: each is one worker)."""
    _run(ctx, names or None, metrics_port)


def _run(ctx: typer.Context, names: list[str] | None, metrics_port: int | None) -> None:
    from streamml.monitor.supervisor import MonitorSupervisor

    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    supervisor = MonitorSupervisor(state(ctx).settings, only=names)
    err.print(f"running {', '.join(names) if names else 'every monitor'}; Ctrl-C stops")
    supervisor.run(stop, metrics_port)
    err.print("stopped: every window committed")


@app.command("list")
def list_monitors(ctx: typer.Context) -> None:
    """The monitors defined in the deployment."""
    from streamml.monitor.spec import read_monitors

    table = Table("name", "model", "predictions", "labels", "key", "window", "within", "role")
    for spec in read_monitors(state(ctx).settings).values():
        table.add_row(spec.name, spec.model, spec.predictions, spec.labels, spec.key, f"{spec.window_ms} ms",
                      f"{spec.within_ms} ms", spec.role)  # fmt: skip
    out.print(table)


@app.command("explain")
def explain(ctx: typer.Context, name: str = typer.Argument(..., help="Monitor name.")) -> None:
    """The SQL a monitor runs on its inputs, and the plans."""
    from streamml.monitor.spec import find_monitor, plan_inputs, read_monitors
    from streamml.monitor.statements import monitor_card
    from streamml.runtime.session import Session

    settings = state(ctx).settings
    spec = find_monitor(read_monitors(settings), name)
    if spec is None:
        raise InputError(f"no monitor named {name!r}", hint="streamml monitor list")
    out.print(plan_inputs(spec, Session(settings).engine, monitor_card(settings, spec.model)).explain(), markup=False)


@app.command("stop")
def stop(ctx: typer.Context, name: str = typer.Argument(..., help="Monitor name.")) -> None:
    """Remove a monitor's definition (its workers stop; metrics already published stay)."""
    from streamml.monitor.spec import find_monitor, publish_monitor, read_monitors

    settings = state(ctx).settings
    spec = find_monitor(read_monitors(settings), name)
    if spec is None:
        raise InputError(f"no monitor named {name!r}", hint="streamml monitor list")
    publish_monitor(settings, None, spec.name)
    err.print(f"[green]monitor {spec.name} removed[/]")


# -- retraining policy ------------------------------------------------------------------------------------


@app.command("policy")
def policy(
    ctx: typer.Context,
    model: str = typer.Argument(..., help="The model to retrain."),
    retrain_on: str = typer.Option(..., "--retrain-on", help="drift, accuracy or schedule."),
    monitor: str | None = typer.Option(None, "--monitor", help="The live monitor (default: the model's name)."),
    every: str | None = typer.Option(None, "--every", help="With schedule: how often, e.g. '1 HOUR'."),
    source: str | None = typer.Option(None, "--source", help="Training stream (default: the card's lineage)."),
    sql: str | None = typer.Option(None, "--sql", help="Training SQL (default: the card's lineage)."),
    label: str | None = typer.Option(None, "--label", help="Label column (default: the card's)."),
    recipe: str | None = typer.Option(None, "--recipe", help="Recipe (default: the card's)."),
    window: str | None = typer.Option(None, "--train-window", help="Train on the last ..., e.g. '1 DAY'."),
    metric: str = typer.Option("f1", "--metric", help="f1, pr_auc, roc_auc, accuracy or recall."),
    margin: float = typer.Option(0.01, "--margin", min=0.0, help="How much better the candidate must be."),
    min_windows: int = typer.Option(3, "--min-windows", min=1, help="Windows of shadow evaluation needed."),
    min_labelled: int = typer.Option(200, "--min-labelled", min=0, help="Labelled rows of shadow evaluation needed."),
    cooldown: str = typer.Option("1 HOUR", "--cooldown", help="Time between retrainings."),
) -> None:
    """Retrain MODEL when its monitor says so, score the candidate in shadow, promote it only if better."""
    from streamml.monitor.policy import RetrainingLoop, RetrainPolicy
    from streamml.monitor.spec import parse_duration

    if retrain_on not in ("drift", "accuracy", "schedule"):
        raise InputError(f"unknown trigger {retrain_on!r}", hint="--retrain-on drift, accuracy or schedule")
    if metric not in ("f1", "pr_auc", "roc_auc", "accuracy", "recall"):
        raise InputError(f"unknown metric {metric!r}", hint="f1, pr_auc, roc_auc, accuracy or recall")
    spec = RetrainPolicy.model_validate({
        "model": model, "monitor": monitor or model, "trigger": retrain_on, "source": source, "sql": sql,
        "label": label, "recipe": recipe, "metric": metric, "margin": margin, "min_windows": min_windows,
        "min_labelled": min_labelled, "cooldown_s": parse_duration(cooldown) / 1000,
        "every_s": parse_duration(every) / 1000 if every else None,
        "train_window_s": parse_duration(window) / 1000 if window else None,
    })  # fmt: skip
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    loop = RetrainingLoop(state(ctx).settings, spec, on_event=lambda e: out.print(f"{e.action} {e.key}: {e.reason}",
                                                                                  markup=False))  # fmt: skip
    err.print(f"retraining {model} on {retrain_on}; shadow monitors run here; Ctrl-C stops")
    loop.run(stop)
    err.print("stopped")
