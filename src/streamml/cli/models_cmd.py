"""``streamml models``: list, show, register, promote, roll back, delete and export model versions.

Alias moves and deletions are published to the control topic, where scoring workers pick them up.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal, cast

import typer
from rich.console import Console
from rich.table import Table

from streamml.cli.state import state
from streamml.cli.train_cmd import print_metrics
from streamml.errors import InputError, KafkaError, RegistryError
from streamml.models.card import ModelCard, RemoteEndpoint
from streamml.models.events import ModelEvent
from streamml.models.registry import DEFAULT_ALIAS, ModelRef, Registry

app = typer.Typer(help="Manage registered models.", no_args_is_help=True)
out = Console(highlight=False)

_PUBLISH = typer.Option(True, "--publish/--no-publish", help="Publish the event to the control topic.")


def registry(ctx: typer.Context) -> Registry:
    from streamml.runtime.training import default_registry

    return default_registry(state(ctx).settings)


def _publish(ctx: typer.Context, events: list[ModelEvent], publish: bool) -> None:
    if not publish or not events:
        return
    from streamml.runtime.control import publish_events

    try:
        publish_events(state(ctx).settings, events)
    except KafkaError as exc:
        raise KafkaError(
            f"the registry changed but its event was not published: {exc.message}",
            hint="workers keep their current model until the event is published; retry the command",
        ) from exc
    for event in events:
        out.print(f"published {event.action} {event.key} -> {event.version}", markup=False)


def _versioned(ref: str) -> ModelRef:
    parsed = ModelRef.parse(ref)
    if parsed.version is None:
        raise RegistryError(f"'{ref}' names no version", hint="use NAME:VERSION, e.g. fraud:3")
    return parsed


@app.command("list")
def list_(ctx: typer.Context) -> None:
    """Registered models: versions, aliases, latest recipe."""
    reg = registry(ctx)
    table = Table("model", "versions", "latest", "aliases", "recipe", "created")
    for name in reg.list():
        manifest = reg.manifest(name)
        if not manifest.versions:
            continue
        latest = manifest.versions[-1]
        card = reg.get(f"{name}:{latest.version}").card
        aliases = ", ".join(f"{a}={v}" for a, v in sorted(manifest.aliases.items())) or "-"
        table.add_row(name, str(len(manifest.versions)), str(latest.version), aliases, card.recipe or card.framework,
                      latest.created.strftime("%Y-%m-%d %H:%M"))  # fmt: skip
    out.print(table)


@app.command()
def show(ctx: typer.Context, ref: str = typer.Argument(..., help="NAME, NAME:VERSION or NAME@ALIAS.")) -> None:
    """Metrics, lineage, output type and plot paths of a version; the model's retraining history."""
    version = registry(ctx).get(ref)
    card = version.card
    out.print(f"[bold]{version.ref}[/]  aliases: {', '.join(version.aliases) or '-'}")
    out.print(f"  recipe: {card.recipe or '-'}  framework: {card.framework} {card.framework_version or ''}".rstrip())
    out.print(f"  created: {card.created.isoformat(timespec='seconds')}", markup=False)
    out.print(f"  features ({len(card.features)}): {', '.join(card.features)}", markup=False)
    out.print(f"  label: {card.label or '-'}  output: {card.sql_type}", markup=False)
    if card.remote is not None:
        out.print(f"  remote: {card.remote.describe} (timeout {card.remote.timeout_ms} ms)", markup=False)
    else:
        out.print(f"  artifact: {version.model_uri}", markup=False)
    print_metrics(version)
    lineage = card.lineage
    out.print("[bold]lineage[/]")
    out.print(f"  source: {lineage.source or '-'}  rows: {lineage.rows if lineage.rows is not None else '-'}",
              markup=False)  # fmt: skip
    for part in lineage.partitions:
        out.print(f"  partition {part.partition}: offsets [{part.start}, {part.end})", markup=False)
    if lineage.time_start is not None or lineage.time_end is not None:
        start = lineage.time_start.isoformat() if lineage.time_start else "-"
        end = lineage.time_end.isoformat() if lineage.time_end else "-"
        out.print(f"  time: {start} .. {end}", markup=False)
    if lineage.sql:
        out.print(f"  sql: {lineage.sql}", markup=False)
    if lineage.value_schema:
        out.print(f"  value schema: {lineage.value_schema}", markup=False)
    if version.plot_uris:
        out.print("[bold]plots[/]")
        for path in version.plot_uris:
            out.print(f"  {path}", markup=False)
    _print_retraining(registry(ctx).history(version.name))


def _print_retraining(events: list[ModelEvent]) -> None:
    """The retraining steps of every version (candidate, shadow, promote/reject): time, reason, both metrics."""
    from streamml.models.events import RETRAINING_ACTIONS

    steps = [e for e in events if e.action in RETRAINING_ACTIONS or (e.action == "promote" and e.reason)]
    if not steps:
        return
    out.print("[bold]retraining[/]")
    table = Table("version", "step", "time", "metric", "candidate", "in force", "reason")
    for e in steps:
        d = e.detail or {}
        number = lambda v: f"{v:.4f}" if isinstance(v, int | float) else "-"  # noqa: E731
        table.add_row(str(e.version), e.action, e.timestamp.isoformat(timespec="seconds"), str(d.get("metric", "-")),
                      number(d.get("candidate")), number(d.get("current")), e.reason or "-")  # fmt: skip
    out.print(table)


@app.command()
def register(
    ctx: typer.Context,
    name: str = typer.Argument(..., help="Model name."),
    artifact: Path | None = typer.Argument(None, help="ONNX file to register (none with --remote)."),
    card: Path | None = typer.Option(
        None, "--card", help="card.json to store with it (with --remote: its output spec and threshold apply)."
    ),
    remote: str | None = typer.Option(
        None, "--remote", help="Score on a model server instead: http://HOST:PORT (REST) or grpc://HOST:PORT."
    ),
    protocol: str = typer.Option("v2", "--protocol", help="The server's protocol: v2 (OIP) or tfserving."),
    remote_model: str | None = typer.Option(None, "--model", help="The model's name on the server (default NAME)."),
    remote_version: str = typer.Option("", "--remote-version", help="A version on the server (default its own)."),
    timeout_ms: int = typer.Option(2000, "--timeout-ms", min=1, help="Timeout of one call."),
    retries: int = typer.Option(3, "--retries", min=0, help="Retries of a retriable failure, with backoff."),
) -> None:
    """Register a new version: an ONNX file (it must load and run), or a model on a server (--remote)."""
    parsed = ModelCard.from_json(card.read_bytes()) if card is not None else None
    if remote is None:
        if artifact is None:
            raise InputError("give the ONNX file to register, or --remote URL for a model on a server")
        version = registry(ctx).register(name, artifact, parsed)
        out.print(f"registered [bold]{version.ref}[/] ({version.card.sql_type})")
        return
    if artifact is not None:
        raise InputError("give either an ONNX file or --remote, not both")
    from streamml.inference.remote import describe

    if protocol not in ("v2", "tfserving"):
        raise InputError(f"unknown protocol '{protocol}'", hint="use v2 or tfserving")
    if not remote.startswith(("http://", "https://", "grpc://")):
        raise InputError(f"--remote '{remote}' is not a URL", hint="http://host:8000 or grpc://host:8001")
    endpoint = RemoteEndpoint(
        url=remote,
        protocol=cast(Literal["v2", "tfserving"], protocol),
        model=remote_model or name,
        version=remote_version,
        timeout_ms=timeout_ms,
        retries=retries,
    )
    signature, output = describe(endpoint)
    base = parsed or ModelCard(name=name)
    if base.output.fields:  # a card that says what the outputs mean (a classifier's classes, a threshold) wins
        output = base.output
    version = registry(ctx).register_remote(
        name, base.with_updates(remote=endpoint, signature=signature, output=output, framework="remote")
    )
    out.print(f"registered {version.ref} ({endpoint.describe}; {version.card.sql_type})", markup=False)


@app.command("import")
def import_(
    ctx: typer.Context,
    path: Path = typer.Argument(
        ..., help="The model: .onnx, .pkl, .pt/.pt2, .keras/.h5, .json/.txt boosters (docs/models.md)."
    ),
    name: str = typer.Option(..., "--name", help="Model name to register it under."),
    sample: Path | None = typer.Option(
        None, "--sample", help="Sample rows (CSV, Parquet, JSON lines): one column per feature."
    ),
    trust: bool = typer.Option(False, "--trust", help="Allow unpickling (only for files you produced yourself)."),
    autoencoder: bool = typer.Option(
        False, "--autoencoder", help="It reconstructs its input: score rows by their reconstruction error."
    ),
    threshold: float | None = typer.Option(
        None, "--threshold", help="With --autoencoder: the anomaly threshold (default: the sample's 0.99 quantile)."
    ),
    promote: bool = typer.Option(False, "--promote", help="Point the production alias at it."),
    publish: bool = _PUBLISH,
) -> None:
    """Convert a model trained elsewhere to ONNX, check parity on the sample, and register it."""
    from streamml.models.importing import import_model, read_sample

    if threshold is not None and not autoencoder:
        raise InputError("--threshold applies to an --autoencoder")
    table = read_sample(sample) if sample is not None else None
    reg = registry(ctx)
    version = import_model(reg, path, name=name, sample=table, trust=trust, autoencoder=autoencoder,
                           threshold=threshold)  # fmt: skip
    parity = version.card.parity
    checked = f"parity {parity.max_abs_diff:.2g} on {parity.rows} rows" if parity is not None else "no parity check"
    out.print(f"imported {path.name} as [bold]{version.ref}[/] ({version.card.framework}; {checked}; "
              f"{version.card.sql_type})")  # fmt: skip
    if promote:
        event = reg.promote(name, version.version)
        out.print(f"{name}@{DEFAULT_ALIAS} -> {version.version}", markup=False)
        _publish(ctx, [event], publish)


@app.command()
def promote(
    ctx: typer.Context,
    name: str = typer.Argument(..., help="Model name."),
    version: int = typer.Argument(..., min=1, help="Version to promote."),
    alias: str = typer.Option(DEFAULT_ALIAS, "--alias", "-a", help="Alias to move."),
    publish: bool = _PUBLISH,
) -> None:
    """Point ALIAS (production) at VERSION."""
    event = registry(ctx).promote(name, version, alias)
    out.print(f"{name}@{alias} -> {version} (was {event.previous_version or 'none'})", markup=False)
    _publish(ctx, [event], publish)


@app.command()
def function(
    ctx: typer.Context,
    name: str = typer.Argument(..., help="SQL function name, e.g. ANOMALY."),
    model: str = typer.Argument(..., help="Model reference: NAME, NAME:VERSION or NAME@ALIAS."),
    field: str | None = typer.Option("score", "--field", "-f", help="Output field returned ('' for the whole result)."),
) -> None:
    """Make NAME(cols...) a SQL function scoring with MODEL (CREATE OR REPLACE FUNCTION NAME AS PREDICT(...))."""
    from streamml.runtime.session import Session

    registry(ctx).get(model)  # an unknown model is refused here, with the registry's hint
    body = "PREDICT('" + model.replace("'", "''") + "')" + (f"->{field}" if field else "")
    Session(state(ctx).settings).execute(f"CREATE OR REPLACE FUNCTION {name} AS {body};")
    out.print(f"{name.upper()}(...) = {body}; drop it with DROP FUNCTION {name.upper()}", markup=False)


@app.command()
def rollback(
    ctx: typer.Context,
    name: str = typer.Argument(..., help="Model name."),
    alias: str = typer.Option(DEFAULT_ALIAS, "--alias", "-a", help="Alias to move back."),
    publish: bool = _PUBLISH,
) -> None:
    """Point ALIAS back at the version it named before."""
    event = registry(ctx).rollback(name, alias)
    out.print(f"{name}@{alias} -> {event.version} (was {event.previous_version})", markup=False)
    _publish(ctx, [event], publish)


@app.command()
def delete(
    ctx: typer.Context,
    ref: str = typer.Argument(..., help="NAME:VERSION to delete."),
    force: bool = typer.Option(False, "--force", help="Delete even if an alias points at it (the alias goes)."),
    publish: bool = _PUBLISH,
) -> None:
    """Delete one version (its number is never reused)."""
    parsed = _versioned(ref)
    assert parsed.version is not None
    events = registry(ctx).delete(parsed.name, parsed.version, force=force)
    out.print(f"deleted {parsed.name}:{parsed.version}", markup=False)
    _publish(ctx, events, publish)


@app.command()
def export(
    ctx: typer.Context,
    ref: str = typer.Argument(..., help="NAME:VERSION (or NAME@ALIAS) to export."),
    destination: str = typer.Argument(..., help="Folder (path or fsspec URL)."),
) -> None:
    """Copy model.onnx, card.json and plots of a version to a folder."""
    written = registry(ctx).export(ref, destination)
    out.print(f"exported {ref} to {written}", markup=False)
