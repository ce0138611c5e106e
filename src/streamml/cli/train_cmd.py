"""``streamml train``: train a recipe on the history of a stream or topic, read through its SQL, and register it."""

from __future__ import annotations

import json
from typing import Any

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

from streamml.cli.state import state
from streamml.errors import InputError
from streamml.models.registry import ModelVersion
from streamml.runtime.history import History

out = Console(highlight=False)
err = Console(stderr=True, highlight=False)

#: Parameters whose comma-separated value is a list of column names.
_LIST_PARAMS = {"features", "exclude", "hidden"}


def parse_params(pairs: list[str]) -> dict[str, Any]:
    """``["epochs=20", "features=V1,V2", "hidden=[16,8,16]"]`` -> typed values (JSON where it parses)."""
    params: dict[str, Any] = {}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        key = key.strip()
        if not sep or not key:
            raise InputError(f"invalid parameter '{pair}'", hint="use KEY=VALUE, e.g. --param epochs=20")
        text = raw.strip()
        try:
            value: Any = json.loads(text)
        except json.JSONDecodeError:
            value = text
        if isinstance(value, str) and key in _LIST_PARAMS and "," in value:
            items = [v.strip() for v in value.split(",") if v.strip()]
            value = [int(v) if v.isdigit() else v for v in items]
        params[key] = value
    return params


def train(
    ctx: typer.Context,
    recipe: str = typer.Argument(
        ..., help="Recipe: autoencoder, gbdt, classifier, tabular, sequence, image, or file.py."
    ),
    source: str = typer.Option(..., "--from", help="Stream of the catalog, or a topic of JSON objects."),
    name: str = typer.Option(..., "--name", "-n", help="Model name in the registry."),
    sql: str | None = typer.Option(None, "--sql", help="SELECT over the source (default: SELECT * FROM it)."),
    from_offset: int | None = typer.Option(None, "--from-offset", min=0, help="First offset of every partition."),
    from_time: str | None = typer.Option(None, "--from-time", help="Start time: epoch ms or ISO-8601."),
    to_offset: int | None = typer.Option(None, "--to-offset", min=0, help="Stop before this offset."),
    to_time: str | None = typer.Option(None, "--to-time", help="Stop before this time: epoch ms or ISO-8601."),
    label: str | None = typer.Option(None, "--label", "-l", help="Label column (none: unsupervised)."),
    param: list[str] = typer.Option([], "--param", "-p", help="Recipe parameter KEY=VALUE (repeatable)."),
    seed: int = typer.Option(0, "--seed", help="Seed of splits and training."),
    promote: bool = typer.Option(False, "--promote", help="Make the new version 'production' and publish it."),
    threads: int | None = typer.Option(None, "--threads", min=1, help="Cap training threads (default: all)."),
    no_cache: bool = typer.Option(False, "--no-cache", help="Read Kafka even if a snapshot of the range exists."),
    progress: bool | None = typer.Option(None, "--progress/--no-progress", help="Progress bars (default: on a tty)."),
) -> None:
    """Train RECIPE on the history of a stream (through its SQL) and register the model."""
    from streamml.runtime.training import default_registry, train_from_stream

    params = parse_params(param)
    settings = state(ctx).settings
    show = err.is_terminal if progress is None else progress
    seen: list[History] = []
    columns = (SpinnerColumn(), TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
               TimeElapsedColumn())  # fmt: skip
    with Progress(*columns, console=err, disable=not show) as bars:
        reading = bars.add_task(f"reading {source}", total=None)
        training = bars.add_task(f"training {recipe}", total=None, start=False, visible=False)

        def on_read(done: int, total: int) -> None:
            bars.update(reading, completed=done, total=total)

        def on_history(history: History) -> None:
            seen.append(history)
            bars.update(reading, completed=history.records, total=history.records)
            bars.stop_task(reading)
            bars.start_task(training)
            bars.update(training, visible=True)

        version = train_from_stream(
            settings, recipe, source, label=label, name=name, params=params, sql=sql, from_offset=from_offset,
            from_time=from_time, to_offset=to_offset, to_time=to_time, seed=seed, cache=not no_cache, threads=threads,
            on_read=on_read, on_history=on_history,
        )  # fmt: skip
        bars.update(training, total=1, completed=1)
    if seen:
        _print_read(seen[0])
    print_metrics(version)
    out.print(f"registered [bold]{version.ref}[/] ({version.card.sql_type})")
    for path in version.plot_uris:
        out.print(f"  plot: {path}", markup=False)
    if promote:
        from streamml.runtime.control import publish_events

        event = default_registry(settings).promote(version.name, version.version)
        publish_events(settings, [event])
        out.print(f"promoted {version.ref} to production (was {event.previous_version or 'none'})")


def _print_read(history: History) -> None:
    where = "snapshot cache" if history.cached else "Kafka"
    failures = history.decode_failures + history.eval_failures
    skipped = f", {failures:,} undecodable/failed records skipped" if failures else ""
    out.print(
        f"read {history.records:,} records -> {history.table.num_rows:,} rows from {where} "
        f"in {history.seconds:.1f} s{skipped}"
    )


def print_metrics(version: ModelVersion) -> None:
    """The scalar metrics of a version's card, plus its threshold and parity."""
    card = version.card
    table = Table("metric", "value", title=f"{version.ref} ({card.recipe or card.framework})")
    for key, value in card.metrics.items():
        if isinstance(value, bool | int | float | str):
            table.add_row(key, f"{value:.4g}" if isinstance(value, float) else str(value))
    if card.threshold is not None:
        table.add_row("threshold", f"{card.threshold:.4g} ({card.threshold_rule or '-'})")
    if card.parity is not None:
        table.add_row("parity max |diff|", f"{card.parity.max_abs_diff:.2g} (tolerance {card.parity.tolerance:g})")
    out.print(table)
