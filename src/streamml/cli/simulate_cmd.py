"""``streamml simulate``: seeded synthetic event streams for demos, tests and benchmarks."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from streamml.cli.state import state
from streamml.errors import InputError
from streamml.ingest.transactions import stream_transactions, transaction_chunks, write_csv
from streamml.kafka import Admin, Producer, client_config

app = typer.Typer(help="Generate synthetic event streams.", no_args_is_help=True)
err = Console(stderr=True, highlight=False)


@app.command("transactions")
def simulate_transactions(
    ctx: typer.Context,
    topic: str | None = typer.Option(None, "--topic", "-t", help="Produce to this topic (created if missing)."),
    rate: float | None = typer.Option(None, "--rate", "-r", min=0.001, help="Records per second."),
    count: int | None = typer.Option(
        None, "--count", "-n", min=1, help="How many (default 100k, endless with --rate)."
    ),
    fraud_rate: float = typer.Option(0.002, "--fraud-rate", min=0.0, max=1.0, help="Share of frauds."),
    seed: int = typer.Option(42, "--seed", help="Seed: the same seed gives the same records."),
    csv: Path | None = typer.Option(None, "--csv", help="Write a CSV file (with header) instead of producing."),
    fmt: str = typer.Option("delimited", "--format", help="Value format on the topic: delimited | json | avro."),
    partitions: int = typer.Option(3, "--partitions", min=1, help="Partitions if the topic is created."),
) -> None:
    """Credit-card-like transactions (Id, Timestamp, User, Time, V1..V28, Amount, Class)."""
    if (topic is None) == (csv is None):
        raise InputError("give exactly one of --topic and --csv")
    if count is None and (rate is None or csv is not None):
        count = 100_000
    chunks = transaction_chunks(count, fraud_rate=fraud_rate, seed=seed)
    if csv is not None:
        rows = write_csv(chunks, csv)
        err.print(f"wrote {rows:,} transactions to {csv}")
        return
    assert topic is not None
    config = client_config(state(ctx).settings)
    Admin(config).create_topic(topic, partitions=partitions, if_not_exists=True)
    bar = Progress(TextColumn(f"transactions → [bold]{topic}[/]"), BarColumn(), MofNCompleteColumn(),
                   TimeElapsedColumn(), console=err, disable=not err.is_terminal)  # fmt: skip
    with bar, Producer(config) as producer:
        task = bar.add_task("simulate", total=count)
        try:
            sent = stream_transactions(producer, topic, chunks, fmt, rate, lambda n: bar.advance(task, n))
        except KeyboardInterrupt:
            sent = int(bar.tasks[0].completed)
    err.print(f"produced {sent:,} transactions to {topic}")
