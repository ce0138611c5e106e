"""``streamml consume``: read a topic from the beginning, an offset or a time; print JSON lines or a table."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import typer
from rich.console import Console
from rich.table import Table

from streamml.cli.state import state
from streamml.errors import InputError
from streamml.formats import get_format
from streamml.formats.base import Format
from streamml.ingest.records import load_avro_encoder
from streamml.kafka import BatchConsumer, RecordBatch, StartAt, client_config
from streamml.runtime.history import parse_time

err = Console(stderr=True, highlight=False)
out = Console(highlight=False)


def parse_start(offset: int | None, from_time: str | None, latest: bool) -> StartAt:
    """The start position from the mutually exclusive ``--offset``, ``--from-time`` and ``--latest``."""
    if sum(x is not None and x is not False for x in (offset, from_time, latest)) > 1:
        raise InputError("give only one of --offset, --from-time and --latest")
    if offset is not None:
        return StartAt(offset=offset)
    if from_time is not None:
        return StartAt(timestamp_ms=parse_time(from_time))
    return StartAt(position="latest" if latest else "earliest")


def consume(
    ctx: typer.Context,
    topic: str = typer.Argument(..., help="Topic to read."),
    offset: int | None = typer.Option(None, "--offset", help="Start at this offset in every partition."),
    from_time: str | None = typer.Option(None, "--from-time", help="Start at this time (ms or ISO-8601)."),
    latest: bool = typer.Option(False, "--latest", help="Only records that arrive from now on."),
    from_beginning: bool = typer.Option(
        False, "--from-beginning", help="Start at the earliest offset (the default; as kafka-console-consumer)."
    ),
    limit: int | None = typer.Option(None, "--limit", "-n", min=1, help="Stop after this many records."),
    group: str | None = typer.Option(None, "--group", "-g", help="Join this consumer group and commit."),
    follow: bool = typer.Option(False, "--follow", help="Keep waiting for new records at the end."),
    fmt: str = typer.Option("json", "--format", help="json | delimited | avro | raw: how values are encoded."),
    schema: Path | None = typer.Option(None, "--schema", help="avro: the .avsc schema of the values."),
    output: str | None = typer.Option(None, "--output", "-o", help="jsonl | table | raw (default: table on a tty)."),
    meta: bool = typer.Option(False, "--meta", help="Add key, partition, offset and timestamp."),
) -> None:
    """Print records of a topic; stops at the end unless --follow. Undecodable records are reported, not fatal."""
    fmt, output = fmt.lower(), (output or ("table" if out.is_terminal else "jsonl")).lower()
    if output not in {"jsonl", "table", "raw"}:
        raise InputError(f"unknown output '{output}'", hint="use jsonl, table or raw")
    decoder = _decoder(fmt, schema)
    if from_beginning and (offset is not None or from_time is not None or latest):
        raise InputError("--from-beginning cannot be combined with --offset, --from-time or --latest")
    start = parse_start(offset, from_time, latest)
    settings = state(ctx).settings
    consumer = BatchConsumer(client_config(settings), [topic], group_id=group, start=start, track_end=not follow)
    shown = bad = 0
    table = Table(show_lines=False) if output == "table" else None
    try:
        while limit is None or shown < limit:
            room = 10_000 if limit is None else min(10_000, limit - shown)
            batch = consumer.poll_batch(max_records=room, timeout_s=0.5)
            if len(batch):
                shown_now, bad_now = _emit(batch, decoder, output, meta, table, topic, limit and limit - shown)
                shown, bad = shown + shown_now, bad + bad_now
                if group:
                    consumer.commit(batch.next_offsets())
            elif not follow and consumer.reached_end():
                break
    except KeyboardInterrupt:
        pass
    finally:
        consumer.close()
    if table is not None:
        out.print(table)
    err.print(f"{shown} records" + (f", {bad} could not be decoded" if bad else ""))


def _decoder(fmt: str, schema: Path | None) -> Format | None:
    if fmt == "raw":
        return None
    if fmt == "avro":
        if schema is None:
            raise InputError("--format avro needs --schema FILE.avsc")
        return load_avro_encoder(schema)
    if fmt == "delimited":
        raise InputError("--format delimited needs a declared schema", hint="read it as --format raw")
    return get_format(fmt)


def _emit(
    batch: RecordBatch,
    decoder: Format | None,
    output: str,
    meta: bool,
    table: Table | None,
    topic: str,
    limit: int | None,
) -> tuple[int, int]:
    values = batch.values
    n = len(values) if limit is None else min(len(values), limit)
    rows = np.arange(n)
    bad = 0
    if decoder is None or output == "raw":
        decoded = pa.table({"value": _text_if_utf8(pa.array(values[:n], pa.binary()))})
    else:
        result = decoder.decode(values[:n])
        for failure in result.failures:
            err.print(
                f"[yellow]skipped[/] {topic}[{batch.partitions[failure.index]}]@{batch.offsets[failure.index]}: "
                f"{failure.reason}"
            )
        bad = len(result.failures)
        decoded, rows = result.table, result.indices
    if meta:
        keys = batch.keys
        decoded = decoded.append_column("_key", pa.array([keys[i] for i in rows], pa.binary()).cast(pa.string()))
        decoded = decoded.append_column("_partition", pa.array(batch.partitions[rows]))
        decoded = decoded.append_column("_offset", pa.array(batch.offsets[rows]))
        decoded = decoded.append_column("_timestamp", pa.array(batch.timestamps[rows]))
    if output == "raw":
        sys.stdout.buffer.write(b"".join(values[i] + b"\n" for i in rows if values[i] is not None))  # type: ignore[operator]
    elif output == "jsonl":
        if decoder is not None and decoder.name == "JSON" and not meta:
            lines = [v for v in (values[i] for i in rows) if v is not None]  # already JSON: as it came
        else:
            lines = get_format("json").encode(decoded)
        sys.stdout.buffer.write(b"\n".join(lines) + b"\n" if lines else b"")
    elif table is not None:
        if not table.columns:
            for name in decoded.column_names:
                table.add_column(name)
        for row in decoded.to_pylist():
            table.add_row(*(_cell(v) for v in row.values()))
    sys.stdout.flush()
    return len(rows), bad


def _text_if_utf8(values: pa.Array) -> pa.Array:
    """Raw values as text when they are valid UTF-8 (JSON output shows binary as base64)."""
    try:
        return values.cast(pa.string())
    except pa.ArrowInvalid:
        return values


def _cell(value: object) -> str:
    if isinstance(value, bytes):
        return value.decode(errors="replace")
    return "" if value is None else str(value)
