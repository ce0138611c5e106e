"""Read the history of a stream or topic through the same SQL plan production runs, as one Arrow table.

The records between two positions (offsets or timestamps, per partition; by default everything up to the
end as of the call) are consumed in large batches, decoded with the source's format exactly as a running
query decodes them (:class:`~streamml.runtime.codec.SourceCodec`) and passed through the compiled query,
batch by batch, all vectorised. Rows come out in a reproducible order (record time, then partition, then
offset), so seeded splits of the same range are the same on every read. The result carries its
:class:`~streamml.models.card.Lineage`: the source, the offset range read per partition, the time range,
the SQL text, the value schema and the row count.

Results are cached as Parquet under ``<home>/snapshots``, keyed by a hash of (cluster, topic, offset ranges,
SQL, schema, format), so repeated reads of the same range (another epoch, another recipe) skip Kafka.

    >>> history = read_history(settings, "transactions", sql="SELECT V1, V2, Class FROM transactions")  # doctest: +SKIP
    >>> history.table.num_rows, history.lineage.partitions                                             # doctest: +SKIP
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import queue
import threading
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from confluent_kafka import KafkaException, TopicPartition

from streamml.config import Settings
from streamml.errors import InputError, KafkaError, SqlError, TopicNotFoundError
from streamml.formats import get_format
from streamml.kafka import Admin, BatchConsumer, RecordBatch, client_config
from streamml.kafka.cluster import translate
from streamml.models.card import Lineage, PartitionRange
from streamml.runtime.codec import SourceCodec
from streamml.sql import Catalog, Column, QueryExecutor, QueryPlan, Source, SqlEngine, SqlType
from streamml.sql.catalog import STREAM

log = logging.getLogger(__name__)

#: Records per consumer poll (and per SQL execution): large enough to amortise DuckDB's fixed cost.
BATCH_RECORDS = 20_000
#: Records sampled to infer the schema of a raw JSON topic.
SAMPLE_RECORDS = 2_000
#: Seconds without a record before a read that has not reached its planned end gives up (and says so).
IDLE_TIMEOUT_S = 30.0
_LINEAGE_META = b"streamml.lineage"
_STATS_META = b"streamml.stats"
#: Metadata columns that order the result: record time, then partition, then offset.
_ORDER = ("ROWTIME", "ROWPARTITION", "ROWOFFSET")

Progress = Callable[[int, int], None]


@dataclass(frozen=True)
class Bounds:
    """Where to start and stop reading: offsets apply to every partition, times (epoch ms) map per partition.

    The end is exclusive: ``to_offset=100`` reads offsets below 100, ``to_time`` records before that time.
    Unset bounds mean the beginning of each partition and its end as of the read.
    """

    from_offset: int | None = None
    from_time_ms: int | None = None
    to_offset: int | None = None
    to_time_ms: int | None = None

    def __post_init__(self) -> None:
        if self.from_offset is not None and self.from_time_ms is not None:
            raise InputError("give either a start offset or a start time, not both")
        if self.to_offset is not None and self.to_time_ms is not None:
            raise InputError("give either an end offset or an end time, not both")
        for name in ("from_offset", "to_offset"):
            value = getattr(self, name)
            if value is not None and value < 0:
                raise InputError(f"{name.replace('_', ' ')} must be >= 0, got {value}")


@dataclass
class History:
    """The rows a query produced over a range of a topic, with where they came from."""

    table: pa.Table
    lineage: Lineage
    records: int = 0
    decode_failures: int = 0
    eval_failures: int = 0
    tombstones: int = 0
    cached: bool = False
    cache_path: Path | None = None
    seconds: float = 0.0
    stats: dict[str, int] = field(default_factory=dict)


def parse_time(text: str | int | datetime) -> int:
    """Epoch milliseconds from an integer (ms), a digit string (ms) or an ISO-8601 date/time (UTC if naive)."""
    if isinstance(text, datetime):
        moment = text
    elif isinstance(text, int):
        return text
    else:
        raw = text.strip()
        if raw.lstrip("-").isdigit():
            return int(raw)
        try:
            moment = datetime.fromisoformat(raw.replace("Z", "+00:00"))
        except ValueError:
            raise InputError(
                f"invalid time '{text}'", hint="use epoch milliseconds or ISO-8601, e.g. 2026-01-31T12:00:00Z"
            ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return int(moment.timestamp() * 1000)


def resolve_source(name: str, engine: SqlEngine | None, settings: Settings) -> tuple[SqlEngine, Source | None]:
    """The engine holding the catalog (loaded from the catalog topic when not given) and ``name``'s stream.

    ``None`` as source means ``name`` is not in the catalog (the caller then treats it as a raw topic).
    """
    if engine is None:
        from streamml.runtime.catalog_store import CatalogStore, engine_from_state

        engine = engine_from_state(CatalogStore(settings).load())
    return engine, engine.catalog.find(name)


def read_history(
    settings: Settings,
    source: str,
    *,
    sql: str | None = None,
    bounds: Bounds | None = None,
    engine: SqlEngine | None = None,
    cache: bool = True,
    progress: Progress | None = None,
    batch_records: int = BATCH_RECORDS,
) -> History:
    """Read ``source`` (a catalog stream, or a topic of JSON values) through ``sql`` into one table.

    ``sql`` is a ``SELECT`` over the source (default ``SELECT * FROM <source>``); only stateless queries
    (projections, filters, functions, ``PREDICT``) are accepted. ``progress(read, total)`` is called after
    every batch. Raises :class:`~streamml.errors.SqlError`, :class:`~streamml.errors.InputError` or
    :class:`~streamml.errors.KafkaError` naming the problem.
    """
    started = time.perf_counter()
    bounds = bounds or Bounds()
    config = client_config(settings)
    engine, stream = resolve_source(source, engine, settings)
    topic = stream.topic if stream else source
    try:
        consumer = BatchConsumer(config, [topic], track_end=True)
    except TopicNotFoundError:
        if stream is not None:
            raise
        names = ", ".join(s.name for s in engine.catalog.streams()) or "none"
        raise InputError(
            f"'{source}' is neither a stream of the catalog nor a topic", hint=f"streams: {names}"
        ) from None
    with consumer:
        ranges = _plan_ranges(consumer, Admin(config, timeout_s=settings.request_timeout_s), topic, bounds)
        if stream is None:
            stream = _infer_source(consumer, source, ranges, bounds)
            engine = SqlEngine(catalog=Catalog(), functions=engine.functions)
            engine.catalog.add(stream)
        sql_text = (sql or f"SELECT * FROM {_quote(stream.name)}").strip().rstrip(";").strip()
        plan = _stateless_plan(engine, sql_text, stream)
        schema_text = ", ".join(f"{_quote(c.name)} {c.type}" for c in stream.columns)
        key = _cache_key(config, stream, ranges, sql_text, schema_text)
        path = settings.home / "snapshots" / f"{key}.parquet"
        if cache and path.is_file():
            found = _load_snapshot(path)
            if found is not None:
                found.seconds = time.perf_counter() - started
                if progress is not None:
                    total = sum(end - start for start, end in ranges.values())
                    progress(total, total)
                return found
        history = _read(settings, consumer, stream, plan, ranges, progress, batch_records)
    lineage = _lineage(stream, ranges, history, sql_text, schema_text)
    history.lineage = lineage
    if cache:
        _store_snapshot(path, history)
        history.cache_path = path
    history.seconds = time.perf_counter() - started
    log.info(
        "read %d records of %s (%d rows) in %.2fs: %.0f records/s",
        history.records,
        topic,
        history.table.num_rows,
        history.seconds,
        history.records / history.seconds if history.seconds else 0.0,
    )
    return history


# -- planning ---------------------------------------------------------------------------------------------
def _plan_ranges(consumer: BatchConsumer, admin: Admin, topic: str, bounds: Bounds) -> dict[int, tuple[int, int]]:
    """Per partition, the offsets ``[start, end)`` to read (end as of now)."""
    marks = admin.watermarks(topic)
    missing = sorted({p for t, p in consumer.assignment() if t == topic} - set(marks))
    if missing:
        raise KafkaError(
            f"no end offsets for partitions {missing} of '{topic}'", hint="retry when the topic is settled"
        )
    starts = {p: low for p, (low, _) in marks.items()}
    ends = {p: high for p, (_, high) in marks.items()}
    if bounds.from_offset is not None:
        starts = {p: max(low, bounds.from_offset) for p, low in starts.items()}
    if bounds.from_time_ms is not None:
        starts = {p: max(starts[p], o) for p, o in _offsets_at(consumer, topic, bounds.from_time_ms, ends).items()}
    if bounds.to_offset is not None:
        ends = {p: min(high, bounds.to_offset) for p, high in ends.items()}
    if bounds.to_time_ms is not None:
        ends = {p: min(ends[p], o) for p, o in _offsets_at(consumer, topic, bounds.to_time_ms, ends).items()}
    return {p: (starts[p], max(starts[p], ends[p])) for p in sorted(marks)}


def why_empty(what: str, ranges: Mapping[int, tuple[int, int]], bounds: Bounds) -> tuple[str, str]:
    """The message and hint for a planned read of no records: records the broker deleted, or bounds past them."""
    if bounds == Bounds() and any(end > 0 for _, end in ranges.values()):
        deleted = ", ".join(f"partition {p} below offset {start}" for p, (start, _) in sorted(ranges.items()) if start)
        return (
            f"{what} has no records left to read: the broker deleted them ({deleted})",
            "records older than the topic's retention.ms are deleted; produce them again, "
            "or raise retention.ms (-1 keeps them) before producing",
        )
    return f"the requested range of {what} holds no records", "check the bounds (offsets, times) against its offsets"


def _offsets_at(consumer: BatchConsumer, topic: str, ms: int, ends: dict[int, int]) -> dict[int, int]:
    """The first offset at or after ``ms`` per partition (the partition's end when there is none)."""
    query = [TopicPartition(topic, p, ms) for p in ends]
    try:
        found = consumer.raw.offsets_for_times(query, timeout=10.0)
    except KafkaException as exc:
        raise translate(exc, f"looking up offsets by time in '{topic}'") from None
    return {tp.partition: (tp.offset if tp.offset >= 0 else ends[tp.partition]) for tp in found}


def _stateless_plan(engine: SqlEngine, sql_text: str, stream: Source) -> QueryPlan:
    plan = engine.plan(sql_text)
    if plan.sink is not None:
        raise SqlError(
            "history reads take a SELECT, not a statement that writes a stream",
            statement=sql_text,
            hint="pass the SELECT part only",
        )
    if plan.kind != "STATELESS" or plan.stateful:
        raise SqlError(
            f"history reads run stateless queries only; this one is {plan.kind.lower().replace('_', ' ')}",
            statement=sql_text,
            hint="select, filter and compute columns here; aggregate the resulting table instead",
        )
    if len(plan.sources) != 1 or plan.sources[0].topic != stream.topic:
        raise SqlError(f"the query must read from '{stream.name}'", statement=sql_text)
    return plan


def _infer_source(consumer: BatchConsumer, topic: str, ranges: dict[int, tuple[int, int]], bounds: Bounds) -> Source:
    """A stream over a raw topic of JSON objects, its columns inferred from the first records in range."""
    wanted = [TopicPartition(topic, p, start) for p, (start, end) in ranges.items() if end > start]
    if not wanted:
        message, hint = why_empty(f"topic '{topic}'", ranges, bounds)
        raise InputError(message, hint=hint)
    consumer.raw.assign(wanted)
    sample: list[bytes | None] = []
    deadline = time.monotonic() + 10.0
    while len(sample) < SAMPLE_RECORDS and time.monotonic() < deadline and not consumer.reached_end():
        sample.extend(consumer.poll_batch(SAMPLE_RECORDS, 0.2).values)
    decoded = get_format("JSON").decode([v for v in sample if v is not None])
    if decoded.table.num_columns == 0:
        raise InputError(
            f"topic '{topic}' is not a stream in the catalog and its values are not JSON objects",
            hint="define a stream over it with CREATE STREAM ... WITH (KAFKA_TOPIC=..., VALUE_FORMAT=...)",
        )
    columns = tuple(
        Column(f.name, SqlType.from_arrow(pa.string() if pa.types.is_null(f.type) else f.type))
        for f in decoded.table.schema
    )
    consumer.clear_end()
    return Source(name=topic, kind=STREAM, columns=columns, topic=topic, value_format="JSON")


def _quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _cache_key(
    config: dict[str, object], stream: Source, ranges: dict[int, tuple[int, int]], sql_text: str, schema: str
) -> str:
    identity = {
        "cluster": str(config.get("bootstrap.servers")),
        "topic": stream.topic,
        "ranges": sorted([p, s, e] for p, (s, e) in ranges.items()),
        "sql": sql_text,
        "schema": schema,
        "format": [stream.value_format, stream.value_delimiter, stream.key_format],
        "key_schema": str(stream.key_schema()),
    }
    return hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:32]


# -- reading ----------------------------------------------------------------------------------------------
class _Fetcher(threading.Thread):
    """Consumes the planned ranges and hands batches over, so Kafka I/O overlaps decoding and SQL.

    Also builds each batch's columns (values, keys, offsets, ...) off the processing thread and tracks, per
    partition, the last offset read and whether its range is complete. A range is complete only on evidence
    that the planned end was reached: a record at or past its last offset, a position at or past its end, or
    an end-of-partition event at or past its end. An end-of-partition event below the planned end (the
    fetch caught up with what the broker showed it so far) is not the end: reading goes on, and gives up
    with an error naming what is missing after ``IDLE_TIMEOUT_S`` without records.
    """

    def __init__(self, consumer: BatchConsumer, topic: str, ranges: dict[int, tuple[int, int]], records: int) -> None:
        super().__init__(name=f"history-{topic}", daemon=True)
        self.consumer, self.topic, self.records = consumer, topic, records
        self.pending = {p for p, (start, end) in ranges.items() if end > start}
        size = max(ranges) + 1 if ranges else 1
        self.end_of = np.zeros(size, np.int64)
        for p, (_, end) in ranges.items():
            self.end_of[p] = end
        self.last_read = np.full(size, -1, np.int64)
        self.batches: queue.Queue[tuple[RecordBatch, np.ndarray, int] | BaseException | None] = queue.Queue(3)
        self.stop = threading.Event()
        self.start_of = {p: start for p, (start, _) in ranges.items()}
        self.position = dict(self.start_of)
        consumer.clear_end()
        consumer.raw.assign([TopicPartition(topic, p, ranges[p][0]) for p in sorted(self.pending)])

    def run(self) -> None:
        try:
            self._fetch()
        except BaseException as exc:  # handed to the processing thread, which raises it
            self._put(exc)
        finally:
            self._put(None)

    def _put(self, item: tuple[RecordBatch, np.ndarray, int] | BaseException | None) -> None:
        while not self.stop.is_set():
            try:
                self.batches.put(item, timeout=0.1)
                return
            except queue.Full:
                continue

    def _fetch(self) -> None:
        consumer, topic, end_of = self.consumer, self.topic, self.end_of
        idle_deadline = time.monotonic() + IDLE_TIMEOUT_S
        while self.pending and not self.stop.is_set():
            batch = consumer.poll_batch(self.records, 0.5)
            if len(batch):
                idle_deadline = time.monotonic() + IDLE_TIMEOUT_S
                partitions, offsets = batch.partitions, batch.offsets
                in_range = offsets < end_of[partitions]
                kept = int(in_range.sum())
                if kept:
                    np.maximum.at(self.last_read, partitions[in_range], offsets[in_range])
                    _ = batch.values, batch.keys, batch.timestamps  # built here, off the processing thread
                    self._put((batch, in_range, kept))
            elif time.monotonic() > idle_deadline:
                raise self.short()
            for tp in consumer.raw.position(consumer.raw.assignment()):
                if tp.partition in self.position:
                    self.position[tp.partition] = max(self.position[tp.partition], tp.offset)
            for (t, p), offset in consumer.end_offsets.items():
                if t == topic and p in self.position:
                    self.position[p] = max(self.position[p], offset)
            done = {p for p in self.pending if self.reached(p) >= end_of[p]}
            if done:
                self.pending -= done
                consumer.raw.pause([TopicPartition(topic, p) for p in done])

    def reached(self, p: int) -> int:
        """The offset partition ``p`` is known to have been read up to (exclusive)."""
        return max(int(self.last_read[p]) + 1, self.position.get(p, 0), self.start_of.get(p, 0))

    def short(self) -> KafkaError:
        """The error for a read that did not reach the planned end of every partition."""
        missing = ", ".join(
            f"partition {p}: expected offsets up to {int(self.end_of[p])}, reached {self.reached(p)}"
            for p in sorted(self.pending)
        )
        return KafkaError(
            f"reading '{self.topic}' stopped short of the planned range ({missing})",
            hint="is the cluster reachable and the topic's data still there? retry the read",
        )


def _read(
    settings: Settings,
    consumer: BatchConsumer,
    stream: Source,
    plan: QueryPlan,
    ranges: dict[int, tuple[int, int]],
    progress: Progress | None,
    batch_records: int,
) -> History:
    total = sum(end - start for start, end in ranges.values())
    codec = SourceCodec(stream, settings)
    executor = plan.executor()
    fetcher = _Fetcher(consumer, stream.topic, ranges, batch_records)
    tables: list[tuple[pa.Table, np.ndarray]] = []
    records = decode_failures = eval_failures = tombstones = 0
    last_read = np.full(len(fetcher.last_read), -1, np.int64)
    t_min, t_max = np.iinfo(np.int64).max, np.iinfo(np.int64).min
    fetcher.start()
    try:
        while (item := fetcher.batches.get()) is not None:
            if isinstance(item, BaseException):
                raise item
            batch, in_range, kept = item
            stamps = batch.timestamps[in_range]
            t_min, t_max = min(t_min, int(stamps.min())), max(t_max, int(stamps.max()))
            np.maximum.at(last_read, batch.partitions[in_range], batch.offsets[in_range])
            result, failed, stones = _process(codec, executor, batch, in_range, kept)
            if result is not None and result[0].num_rows:
                tables.append(result)
            decode_failures += failed[0]
            eval_failures += failed[1]
            tombstones += stones
            records += kept
            if progress is not None:
                progress(records, total)
            if executor.done:
                break
    finally:
        fetcher.stop.set()
        fetcher.join()
        executor.close()
    if not executor.done and fetcher.pending:  # never hand out a silently short history
        raise fetcher.short()
    table = _concat(tables, plan)
    history = History(
        table=table,
        lineage=Lineage(),
        records=records,
        decode_failures=decode_failures,
        eval_failures=eval_failures,
        tombstones=tombstones,
    )
    history.stats = {"time_min": t_min if records else -1, "time_max": t_max if records else -1}
    history.stats.update({f"last_{p}": int(last_read[p]) for p in ranges})
    return history


def _process(
    codec: SourceCodec, executor: QueryExecutor, batch: RecordBatch, in_range: np.ndarray, kept: int
) -> tuple[tuple[pa.Table, np.ndarray] | None, tuple[int, int], int]:
    """Decode one batch, drop rows past the end of their partition's range, run the query (vectorised).

    Returns the query's rows with each row's (timestamp, partition, offset), the failure counts (decode,
    evaluation) and the number of tombstones.
    """
    decoded = codec.decode(batch)
    table, meta, rows = decoded.table, decoded.meta, decoded.rows
    failures = sum(1 for index, _ in decoded.failures if in_range[index])
    stones = int(in_range[decoded.tombstones].sum()) if len(decoded.tombstones) else 0
    if kept < len(batch):
        mask = pa.array(in_range[rows])
        table = table.filter(mask)
        meta = {name: pc.filter(array, mask) for name, array in meta.items()}
    if table.num_rows == 0:
        return None, (failures, 0), stones
    result = executor.execute(table, meta=meta)
    origin = np.asarray(result.indices, np.int64)
    position = np.stack([np.asarray(meta[name].to_numpy(zero_copy_only=False), np.int64)[origin] for name in _ORDER])
    return (result.table, position), (failures, len(result.failures)), stones


def _concat(tables: Sequence[tuple[pa.Table, np.ndarray]], plan: QueryPlan) -> pa.Table:
    """One table in a reproducible order: by record time, then partition, then offset."""
    if not tables:
        return plan.output_schema().empty_table()
    schema = tables[0][0].schema
    same = [t if t.schema == schema else t.cast(schema) for t, _ in tables]
    table = pa.concat_tables(same)
    position = np.concatenate([p for _, p in tables], axis=1)
    order = np.lexsort(position[::-1])
    if not np.array_equal(order, np.arange(len(order))):
        table = table.take(pa.array(order))
    return table.combine_chunks()


def _lineage(
    stream: Source, ranges: dict[int, tuple[int, int]], history: History, sql_text: str, schema_text: str
) -> Lineage:
    parts = []
    for p, (start, _) in sorted(ranges.items()):
        last = history.stats.get(f"last_{p}", -1)
        parts.append(PartitionRange(partition=p, start=start, end=max(start, last + 1)))
    t_min, t_max = history.stats.get("time_min", -1), history.stats.get("time_max", -1)
    return Lineage(
        source=stream.name,
        partitions=parts,
        time_start=datetime.fromtimestamp(t_min / 1000, UTC) if t_min >= 0 else None,
        time_end=datetime.fromtimestamp(t_max / 1000, UTC) if t_max >= 0 else None,
        sql=sql_text,
        value_schema=schema_text,
        rows=history.table.num_rows,
    )


# -- snapshot cache ---------------------------------------------------------------------------------------
def _store_snapshot(path: Path, history: History) -> None:
    """Write the table with its lineage as Parquet, atomically (temporary file, then rename)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    counts = {
        "records": history.records,
        "decode_failures": history.decode_failures,
        "eval_failures": history.eval_failures,
        "tombstones": history.tombstones,
    }
    metadata = dict(history.table.schema.metadata or {})
    metadata[_LINEAGE_META] = history.lineage.model_dump_json().encode()
    metadata[_STATS_META] = json.dumps(counts).encode()
    staging = path.with_name(f".{path.name}.{uuid.uuid4().hex}")
    try:
        pq.write_table(history.table.replace_schema_metadata(metadata), staging, compression="zstd")
        os.replace(staging, path)
    except OSError as exc:
        log.warning("could not write snapshot %s: %s", path, exc)
        staging.unlink(missing_ok=True)


def _load_snapshot(path: Path) -> History | None:
    """A cached history, or None when the file is unreadable (it is then read from Kafka again)."""
    try:
        table = pq.read_table(path)
    except (OSError, pa.ArrowException) as exc:
        log.warning("ignoring unreadable snapshot %s: %s", path, exc)
        return None
    metadata = dict(table.schema.metadata or {})
    raw_lineage = metadata.pop(_LINEAGE_META, None)
    counts = json.loads(metadata.pop(_STATS_META, b"{}"))
    if raw_lineage is None:
        return None
    table = table.replace_schema_metadata(metadata or None)
    log.info("history snapshot hit: %s", path)
    return History(
        table=table,
        lineage=Lineage.model_validate_json(raw_lineage),
        records=int(counts.get("records", 0)),
        decode_failures=int(counts.get("decode_failures", 0)),
        eval_failures=int(counts.get("eval_failures", 0)),
        tombstones=int(counts.get("tombstones", 0)),
        cached=True,
        cache_path=path,
    )
