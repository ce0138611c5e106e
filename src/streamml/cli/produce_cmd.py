"""``streamml produce``: records from stdin or a file into a topic, in batches, at a rate."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import BinaryIO

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from streamml.cli.state import state
from streamml.errors import InputError, TopicNotFoundError
from streamml.ingest.records import LineCodec, load_avro_encoder
from streamml.ingest.replay import RateLimiter, line_batches, replay_lines
from streamml.kafka import Admin, Producer, client_config

err = Console(stderr=True, highlight=False)


def produce(
    ctx: typer.Context,
    topic: str = typer.Argument(..., help="Topic to write to."),
    file: Path | None = typer.Option(None, "--file", "-f", help="Read records from this file (default: stdin)."),
    fmt: str = typer.Option("json", "--format", help="json | delimited | avro | raw (one record per line)."),
    key: str | None = typer.Option(None, "--key", "-k", help="Field whose value becomes the record key."),
    header: bool = typer.Option(False, "--header", help="delimited: the first line names the columns."),
    columns: str | None = typer.Option(None, "--columns", help="delimited: comma-separated column names."),
    schema: Path | None = typer.Option(None, "--schema", help="avro: the .avsc schema of the records."),
    rate: float | None = typer.Option(None, "--rate", "-r", min=0.001, help="At most this many records/s."),
    limit: int | None = typer.Option(None, "--limit", "-n", min=1, help="Stop after this many records."),
    loop: bool = typer.Option(False, "--loop", help="Replay the file again and again (needs --file)."),
    batch: int = typer.Option(10_000, "--batch", min=1, help="Records per batch."),
    progress: bool | None = typer.Option(None, "--progress/--no-progress", help="Progress bar (default: on a tty)."),
    create: bool = typer.Option(False, "--create", help="Create the topic if it does not exist."),
    partitions: int = typer.Option(1, "--partitions", min=1, help="With --create: partitions of a new topic."),
) -> None:
    """Produce one record per input line; invalid lines stop the run with their line number."""
    fmt = fmt.lower()
    if loop and file is None:
        raise InputError("--loop needs --file", hint="stdin can be read only once")
    with ExitStack() as stack:
        first_stream = _open(file, stack)
        names: tuple[str, ...] = tuple(c.strip() for c in columns.split(",")) if columns else ()
        skip = 0
        if header:
            names = tuple(c.strip().strip('"') for c in first_stream.readline().decode().rstrip("\r\n").split(","))
            skip = 0  # the header line was consumed already
        encoder = load_avro_encoder(schema) if fmt == "avro" and schema is not None else None
        codec = LineCodec(fmt, key=key, columns=names, encoder=encoder)

        settings = state(ctx).settings
        config = client_config(settings)
        admin = Admin(config, timeout_s=settings.request_timeout_s)
        if not admin.exists(topic):
            if not create:
                missing = TopicNotFoundError(topic)
                missing.hint = f"{missing.hint}, or produce with --create [--partitions N]"
                raise missing
            admin.create_topic(topic, partitions=partitions, if_not_exists=True)
            err.print(f"created topic {topic} ({partitions} partitions)")
        limiter = RateLimiter(rate)
        size = limiter.chunk_size(batch)
        offset = 1 if header else 0

        def batches() -> Iterator[tuple[int, list[bytes]]]:
            stream: BinaryIO = first_stream
            while True:
                for first, lines in line_batches(stream, size, skip):
                    yield first + offset, lines
                if not loop:
                    return
                stream = stack.enter_context(file.open("rb"))  # type: ignore[union-attr]
                if header:
                    stream.readline()

        show = progress if progress is not None else err.is_terminal
        bar = Progress(
            TextColumn(f"producing to [bold]{topic}[/]"), BarColumn(), MofNCompleteColumn(),
            TextColumn("{task.fields[rate]:>10.0f} rec/s"), TimeElapsedColumn(),
            console=err, disable=not show,
        )  # fmt: skip
        with bar, Producer(config) as producer:
            task = bar.add_task("produce", total=limit, rate=0.0)

            def advance(n: int) -> None:
                bar.advance(task, n)
                elapsed = bar.tasks[0].elapsed or 0.0
                bar.update(task, rate=bar.tasks[0].completed / elapsed if elapsed else 0.0)

            stats = replay_lines(producer, topic, batches(), codec, limiter, advance, limit)
    err.print(f"produced {stats.records} records to {topic} in {stats.seconds:.2f} s ({stats.rate:,.0f} rec/s)")


def _open(file: Path | None, stack: ExitStack) -> BinaryIO:
    if file is None:
        return sys.stdin.buffer
    if not file.is_file():
        raise InputError(f"input file '{file}' does not exist")
    return stack.enter_context(file.open("rb"))
