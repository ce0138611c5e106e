"""``streamml topic``: create, list, describe, delete topics."""

from __future__ import annotations

import typer
from rich.console import Console
from rich.table import Table

from streamml.cli.state import state
from streamml.errors import InputError
from streamml.kafka import Admin, client_config

app = typer.Typer(help="Manage Kafka topics.", no_args_is_help=True)
out = Console(highlight=False)


def admin(ctx: typer.Context) -> Admin:
    settings = state(ctx).settings
    return Admin(client_config(settings), timeout_s=settings.request_timeout_s)


def parse_configs(pairs: list[str]) -> dict[str, str]:
    """``["cleanup.policy=compact"]`` -> ``{"cleanup.policy": "compact"}``."""
    configs: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise InputError(f"invalid topic config '{pair}'", hint="use KEY=VALUE, e.g. cleanup.policy=compact")
        configs[key.strip()] = value.strip()
    return configs


@app.command()
def create(
    ctx: typer.Context,
    name: str,
    partitions: int = typer.Option(1, "--partitions", "-p", min=1),
    replication: int = typer.Option(1, "--replication", "-r", min=1),
    config: list[str] = typer.Option([], "--config", "-c", help="Topic config KEY=VALUE (repeatable)."),
    if_not_exists: bool = typer.Option(False, "--if-not-exists", help="Succeed if the topic exists."),
) -> None:
    """Create a topic."""
    created = admin(ctx).create_topic(name, partitions, replication, parse_configs(config), if_not_exists)
    out.print(f"created topic {name}" if created else f"topic {name} already exists")


@app.command("list")
def list_(
    ctx: typer.Context, internal: bool = typer.Option(False, "--internal", help="Include internal topics.")
) -> None:
    """List topics."""
    for name in admin(ctx).topic_names(include_internal=internal):
        out.print(name, markup=False)


@app.command()
def describe(ctx: typer.Context, name: str) -> None:
    """Partitions, leaders, offsets and configs of a topic."""
    info = admin(ctx).describe_topic(name)
    out.print(
        f"[bold]{info.name}[/]  partitions={len(info.partitions)}  replication={info.replication}  "
        f"messages={info.messages}"
    )
    table = Table("partition", "leader", "replicas", "isr", "low", "high")
    for p in info.partitions:
        table.add_row(str(p.id), str(p.leader), str(p.replicas), str(p.isr), str(p.low), str(p.high))
    out.print(table)
    for key, value in info.config.items():
        out.print(f"  {key}={value}", markup=False)


@app.command()
def delete(
    ctx: typer.Context, name: str, if_exists: bool = typer.Option(False, "--if-exists", help="Succeed if absent.")
) -> None:
    """Delete a topic."""
    deleted = admin(ctx).delete_topic(name, if_exists=if_exists)
    out.print(f"deleted topic {name}" if deleted else f"topic {name} does not exist")
