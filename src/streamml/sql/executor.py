"""Run a compiled :class:`QueryPlan` on in-memory Arrow batches with DuckDB.

A :class:`QueryExecutor` is built once per query (connection, macros, user functions) and then called per
batch. Stateless steps run as one vectorised DuckDB query over the batch; when evaluation fails (a user
function raises, an integer overflows) the batch is bisected so that only the failing rows are set aside,
with the reason, as :class:`RowFailure`.

State is kept per input partition. A batch may mix partitions (as a Kafka consumer batch does): stateful
plans split it by ``ROWPARTITION`` (stable sort, so each partition keeps its record order), update each
partition's state in turn and concatenate the results, partition by partition. Stream-table joins assume,
like ksqlDB, that stream and table are co-partitioned by the join key: a stream row of partition ``p``
only sees the table rows applied to partition ``p``.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from itertools import pairwise
from typing import Any

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from streamml.errors import SqlError
from streamml.sql.aggregate import AggregateState
from streamml.sql.changes import legacy_snapshot
from streamml.sql.compiler import event_time_sql, quote
from streamml.sql.functions import MACROS
from streamml.sql.join import StreamBuffers, TableJoinState, TableState
from streamml.sql.plan import AGGREGATE, STREAM_STREAM_JOIN, STREAM_TABLE_JOIN, TABLE_TABLE_JOIN, QueryPlan
from streamml.sql.sequences import SequenceState
from streamml.sql.session import SessionState
from streamml.sql.udf import CallFailures

log = logging.getLogger(__name__)

META_COLUMNS = ("ROWTIME", "ROWKEY", "ROWPARTITION", "ROWOFFSET")


@dataclass(frozen=True, slots=True)
class RowFailure:
    """An input row whose evaluation failed: its position in the batch, why, and in which stage
    (``evaluate``, or the stage of the user function that raised, such as ``predict``)."""

    index: int
    reason: str
    stage: str = "evaluate"


@dataclass
class BatchResult:
    """Output of one batch.

    ``table`` holds the output columns (key columns first, named in ``key_columns``); ``timestamps`` the
    record time (ms) of each output row; ``indices`` the input row of each output row (-1 for aggregation
    output); ``counters`` include ``input``, ``output``, ``filtered``, ``failed``, ``cast_failures``, ``late``
    and ``tombstones``.

    ``tombstones`` holds the key columns (``key_columns``, with ``WINDOWSTART``/``WINDOWEND`` for windowed
    aggregations) of table rows that were deleted by this batch: a key whose aggregate stopped satisfying
    HAVING, or a session window that was merged into another one. The runtime writes each as a record with
    that key and a null value, timestamped by ``tombstone_timestamps``. No tombstone has all its key columns
    equal to a row of ``table``, but a session tombstone can share ``WINDOWSTART`` with an update (the
    session grew): write tombstones before the updates, or put ``WINDOWEND`` in session keys (as Kafka
    Streams' session key format does).
    """

    table: pa.Table
    key_columns: tuple[str, ...]
    timestamps: pa.Array
    indices: np.ndarray
    failures: list[RowFailure] = field(default_factory=list)
    counters: dict[str, int] = field(default_factory=dict)
    tombstones: pa.Table = field(default_factory=lambda: pa.table({}))
    tombstone_timestamps: pa.Array = field(default_factory=lambda: pa.array([], pa.int64()))

    @property
    def cast_failures(self) -> int:
        return self.counters.get("cast_failures", 0)


def _partition_groups(parts: pa.ChunkedArray | pa.Array) -> list[tuple[int, np.ndarray | None]]:
    """(partition, row positions in batch order) per partition; ``None`` positions: the whole batch."""
    values = pc.fill_null(parts, 0).to_numpy()
    if len(values) == 0 or (values == values[0]).all():
        return [(int(values[0]) if len(values) else 0, None)]
    order = np.argsort(values, kind="stable")
    ordered = values[order]
    bounds = [0, *(np.flatnonzero(np.diff(ordered)) + 1).tolist(), len(values)]
    return [(int(ordered[lo]), order[lo:hi]) for lo, hi in pairwise(bounds)]


def _concat_results(results: list[BatchResult]) -> BatchResult:
    first = results[0]
    counters: dict[str, int] = {}
    for r in results:
        for k, v in r.counters.items():
            counters[k] = counters.get(k, 0) + v
    return BatchResult(
        pa.concat_tables([r.table for r in results]),
        first.key_columns,
        pa.concat_arrays([r.timestamps for r in results]),
        np.concatenate([r.indices for r in results]),
        sorted((f for r in results for f in r.failures), key=lambda f: f.index),
        counters,
        pa.concat_tables([r.tombstones for r in results]),
        pa.concat_arrays([r.tombstone_timestamps for r in results]),
    )


def _reason(exc: Exception) -> str:
    text = str(exc).strip()
    marker = "while executing the UDF: "
    if marker in text:
        text = text.split(marker, 1)[1]
    return (text.splitlines()[0] if text else type(exc).__name__)[:500]


def evaluate_constants(select: str) -> pa.Table:
    """One row of a ``SELECT`` of constant expressions (``INSERT ... VALUES``), with the built-in macros."""
    con = duckdb.connect(config={"threads": 1})
    try:
        con.execute("SET TimeZone = 'UTC'")
        for macro in MACROS:
            con.execute(macro)
        try:
            return con.sql(select).to_arrow_table()
        except duckdb.Error as exc:
            raise SqlError(f"cannot evaluate the values: {str(exc).splitlines()[0]}") from None
    finally:
        con.close()


class QueryExecutor:
    """Executes one query plan batch by batch; holds the query's state for stateful plans."""

    def __init__(self, plan: QueryPlan, *, threads: int = 1) -> None:
        self.plan = plan
        self.con = duckdb.connect(config={"threads": threads})
        self.con.execute("SET error_on_division_by_zero = false")
        self.con.execute("SET TimeZone = 'UTC'")  # epoch times are UTC, whatever the machine's zone
        for macro in MACROS:
            self.con.execute(macro)
        #: what the user functions reported during the current query (see ``UserFunction.register``)
        self._calls = CallFailures()
        for use in plan.udfs:
            use.function.register(self.con, list(use.arg_types), use.result_type, self._calls, row_ids=use.row_ids)
        #: per source (left, right), its columns with their Arrow types
        self._schemas = [{c.name: c.type.to_arrow() for c in source.columns} for source in plan.sources]
        self._event_times = [event_time_sql(source) for source in plan.sources]
        self.aggregate: AggregateState | None = None
        if plan.aggregate is not None:
            window = plan.aggregate.window
            session = window is not None and window.kind == "SESSION"
            self.aggregate = (SessionState if session else AggregateState)(self.con, plan.aggregate)
        self.table_state = (
            TableState(self.con, plan.join.right) if plan.kind == STREAM_TABLE_JOIN and plan.join else None
        )
        self.table_join = (
            TableJoinState(self.con, plan.sources[0], plan.sources[1]) if plan.kind == TABLE_TABLE_JOIN else None
        )
        self.sequence = SequenceState(plan.sequence) if plan.sequence is not None else None
        self.buffers = None
        if plan.kind == STREAM_STREAM_JOIN and plan.join is not None and plan.join.within is not None:
            self.buffers = StreamBuffers(self.con, plan.join.within, plan.join.grace_ms)
        self.emitted = 0

    # ---- input ------------------------------------------------------------------------------------------
    def _input(self, batch: pa.Table, meta: pa.Table | Mapping[str, Any] | None, source: int = 0) -> pa.Table:
        n = batch.num_rows
        schema = self._schemas[source]
        present = set(batch.column_names)
        by_upper = {name.upper(): name for name in batch.column_names}
        arrays: list[pa.Array | pa.ChunkedArray] = []
        names: list[str] = []
        for name, arrow_type in schema.items():
            actual = name if name in present else by_upper.get(name.upper())
            if actual is None:
                column: pa.Array | pa.ChunkedArray = pa.nulls(n, arrow_type)
            else:
                column = batch.column(actual)
                if column.type != arrow_type:
                    column = column.cast(arrow_type)
            arrays.append(column)
            names.append(name)
        meta_get = (
            (lambda key: meta.column(key) if key in meta.column_names else None)
            if isinstance(meta, pa.Table)
            else (lambda key: meta.get(key) if meta is not None else None)
        )
        defaults = {
            "ROWTIME": (pa.int64(), lambda: pa.array(np.zeros(n, dtype=np.int64))),
            "ROWKEY": (pa.string(), lambda: pa.nulls(n, pa.string())),
            "ROWPARTITION": (pa.int32(), lambda: pa.array(np.zeros(n, dtype=np.int32))),
            "ROWOFFSET": (pa.int64(), lambda: pa.array(np.arange(n, dtype=np.int64))),
        }
        for key, (arrow_type, default) in defaults.items():
            if key in schema:
                continue
            value = meta_get(key)
            if value is None:
                value = default()
            elif not isinstance(value, pa.Array | pa.ChunkedArray):
                value = pa.array(value)
            if value.type != arrow_type:
                value = value.cast(arrow_type)
            arrays.append(value)
            names.append(key)
        arrays.append(pa.array(np.arange(n, dtype=np.int64)))
        names.append("__row")
        if self.plan.reads_deletes:  # a table's changes: deletes too
            deletes = batch.column("__delete") if "__delete" in present else pa.array(np.zeros(n, dtype=bool))
            arrays.append(deletes)
            names.append("__delete")
        table = pa.Table.from_arrays(arrays, names=names)
        event_time = self._event_times[source] if source < len(self._event_times) else None
        if event_time is not None and n and "ROWTIME" not in schema:
            # TIMESTAMP='col': the record's time is the column's, as in ksqlDB (the Kafka timestamp if NULL)
            times = self._query(f"SELECT coalesce(CAST({event_time} AS BIGINT), ROWTIME) FROM __input", table)
            table = table.set_column(names.index("ROWTIME"), "ROWTIME", times.column(0).cast(pa.int64()))
        return table

    # ---- evaluation -------------------------------------------------------------------------------------
    def _query(self, sql: str, table: pa.Table, name: str = "__input") -> pa.Table:
        self.con.register(name, table)
        try:
            return self.con.sql(sql).to_arrow_table()
        finally:
            self.con.unregister(name)

    def _isolating(self, sql: str, table: pa.Table) -> tuple[pa.Table | None, list[RowFailure]]:
        """Run ``sql`` over ``table``; bisect on failure so only failing rows are set aside."""
        outs: list[pa.Table] = []
        failures: list[RowFailure] = []

        def run(lo: int, hi: int) -> None:
            self._calls.clear()
            try:
                out = self._query(sql, table.slice(lo, hi - lo))
            except (duckdb.Error, ArithmeticError, ValueError, TypeError) as exc:
                if hi - lo == 1:
                    stage = self._calls.stages[-1] if self._calls.stages else "evaluate"
                    failures.append(RowFailure(int(table.column("__row")[lo].as_py()), _reason(exc), stage))
                    return
                mid = (lo + hi) // 2
                run(lo, mid)
                run(mid, hi)
                return
            if self._calls.rows:  # rows a function set aside: failures, not output
                rejected = self._calls.rows
                failures.extend(RowFailure(row, reason, stage) for row, (reason, stage) in sorted(rejected.items()))
                out = out.filter(pc.invert(pc.is_in(out.column("__row"), pa.array(list(rejected), pa.int64()))))
            outs.append(out)

        if table.num_rows:
            run(0, table.num_rows)
        if not outs:
            return None, failures
        return (outs[0] if len(outs) == 1 else pa.concat_tables(outs)), failures

    def execute(
        self, batch: pa.Table, meta: pa.Table | Mapping[str, Any] | None = None, *, side: str = "left"
    ) -> BatchResult:
        """Run the query on one batch; ``meta`` gives ROWTIME/ROWKEY/ROWPARTITION/ROWOFFSET per row.

        For stream-stream joins ``side`` says which stream the batch comes from (``left`` or ``right``).
        A batch of a stateful query may mix partitions; its result then lists the output of each partition
        in turn (ascending partition), each in record order; ``indices`` refer to rows of ``batch``.
        """
        table = self._input(batch, meta, 1 if side == "right" else 0)
        if not self.plan.stateful:
            return self._apply_limit(self._execute_partition(table, 0, side))
        results = [
            self._execute_partition(table if rows is None else table.take(rows), partition, side)
            for partition, rows in _partition_groups(table.column("ROWPARTITION"))
        ]
        return self._apply_limit(results[0] if len(results) == 1 else _concat_results(results))

    def _execute_partition(self, table: pa.Table, partition: int, side: str) -> BatchResult:
        if self.buffers is not None:
            return self._execute_stream_join(table, side, partition)
        if self.table_join is not None:
            return self._execute_table_join(table, side, partition)
        if self.plan.kind == AGGREGATE:
            return self._execute_aggregate(table, partition)
        n_in, failures = table.num_rows, list[RowFailure]()
        if self.sequence is not None and self.plan.sequence is not None:
            table, failures = self._isolating(self.plan.sequence.pre_sql, table)
            if table is None:
                return self._finish(None, failures, n_in, stateless=True)
            table, aside = self.sequence.process(table, partition)
            failures += [RowFailure(a.row, a.reason, a.stage) for a in aside]
            failures.sort(key=lambda f: f.index)
        if self.table_state is not None:
            self.con.execute(
                f"CREATE OR REPLACE TEMP VIEW __table AS SELECT * FROM {self.table_state.table(partition)}"
            )
        out, more = self._isolating(self.plan.main_sql, table)
        if out is not None and self.plan.passthrough:
            out = self._add_passthrough(out, table)
        return self._finish(out, failures + more if failures else more, n_in, stateless=True)

    def _add_passthrough(self, out: pa.Table, table: pa.Table) -> pa.Table:
        """Attach the plainly projected input columns for the rows that made it into ``out``."""
        rows = out.column("__row")
        inputs = table.select(list(dict.fromkeys(self.plan.passthrough.values())))
        if out.num_rows != table.num_rows:
            inputs = inputs.take(rows)
        for name, column in self.plan.passthrough.items():
            out = out.append_column(name, inputs.column(column))
        return out

    def _empty_inputs(self) -> tuple[pa.Table, pa.Table]:
        empty = pa.table({})
        return self._input(empty, None, 0), self._input(empty, None, 1)

    def _execute_stream_join(self, table: pa.Table, side: str, partition: int) -> BatchResult:
        assert self.buffers is not None and self.plan.join is not None
        names = self.buffers.tables(partition, *self._empty_inputs())
        n_in = table.num_rows
        late = self.buffers.late_mask(partition, side, table.column("ROWTIME"))
        n_late = int(late.sum())
        if n_late:
            table = table.filter(pa.array(~late))
        sql = self.plan.main_sql if side == "left" else self.plan.join.right_sql
        out, failures = self._isolating(sql, table)
        self.buffers.add(partition, side, table, names)
        return self._finish(out, failures, n_in, stateless=True, late=n_late)

    def _execute_table_join(self, table: pa.Table, side: str, partition: int) -> BatchResult:
        """Apply one table's changes, then join every key they touched: its row, or a tombstone."""
        assert self.table_join is not None and self.plan.join is not None
        source = self.plan.sources[0 if side == "left" else 1]
        deletes = table.column("__delete").to_numpy(zero_copy_only=False)
        self.table_join.update(side, table.select([c.name for c in source.columns]), deletes, partition)
        key = quote(source.key_columns[0].name)
        touched = self._query(
            f"SELECT {key} AS __k, max(ROWTIME) AS __ts FROM __input WHERE {key} IS NOT NULL GROUP BY {key}", table
        )
        self.table_join.views(partition)
        out = self._query(self.plan.main_sql, touched, "__touched")
        gone = self._query(self.plan.join.right_sql, touched, "__touched")
        return self._finish(out, [], table.num_rows, stateless=False, tombstones=gone)

    def _finish(
        self,
        out: pa.Table | None,
        failures: list[RowFailure],
        n_in: int,
        *,
        stateless: bool,
        late: int = 0,
        casts: int = 0,
        tombstones: pa.Table | None = None,
    ) -> BatchResult:
        keys = tuple(self.plan.key_columns)
        if out is None:
            out = self.plan.output_schema().empty_table().append_column("__rowtime", pa.array([], pa.int64()))
        if "__cast_failures" in out.column_names:
            casts += int(pc.sum(out.column("__cast_failures")).as_py() or 0)
        indices = (
            out.column("__row").to_numpy().astype(np.int64)
            if stateless and "__row" in out.column_names
            else np.full(out.num_rows, -1, dtype=np.int64)
        )
        timestamps = (
            out.column("__rowtime").combine_chunks()
            if "__rowtime" in out.column_names
            else pa.nulls(out.num_rows, pa.int64())
        )
        names = [c.name for c in self.plan.output]
        values = out.select(names)
        schema = self.plan.output_schema()
        if values.schema != schema:
            values = values.cast(schema)
        key_schema = pa.schema([schema.field(k) for k in keys])
        if tombstones is None:
            tomb_values, tomb_times = key_schema.empty_table(), pa.array([], pa.int64())
        else:
            tomb_values = tombstones.select(list(keys)).cast(key_schema)
            tomb_times = tombstones.column("__rowtime").combine_chunks().cast(pa.int64())
        counters = {
            "input": n_in,
            "output": values.num_rows,
            "failed": len(failures),
            "filtered": max(0, n_in - len(failures) - late - values.num_rows) if stateless else 0,
            "cast_failures": casts,
            "late": late,
            "tombstones": tomb_values.num_rows,
        }
        return BatchResult(values, keys, timestamps, indices, failures, counters, tomb_values, tomb_times)

    def _apply_limit(self, result: BatchResult) -> BatchResult:
        limit = self.plan.limit
        if limit is None:
            return result
        room = max(0, limit - self.emitted)
        if result.table.num_rows > room:
            result.table = result.table.slice(0, room)
            result.timestamps = result.timestamps.slice(0, room)
            result.indices = result.indices[:room]
            result.counters["output"] = room
        self.emitted += result.table.num_rows
        return result

    @property
    def done(self) -> bool:
        """True once a query with LIMIT has produced all its rows."""
        return self.plan.limit is not None and self.emitted >= self.plan.limit

    def _execute_aggregate(self, table: pa.Table, partition: int) -> BatchResult:
        assert self.aggregate is not None and self.plan.aggregate is not None
        first = self.aggregate.next_seq(partition, table.num_rows)
        table = table.append_column("__seq", pa.array(np.arange(first, first + table.num_rows, dtype=np.int64)))
        pre, failures = self._isolating(self.plan.aggregate.pre_sql, table)
        casts = 0
        if pre is not None and "__cast_failures" in pre.column_names:
            casts = int(pc.sum(pre.column("__cast_failures")).as_py() or 0)
        if pre is None or pre.num_rows == 0:
            return self._finish(None, failures, table.num_rows, stateless=False, casts=casts)
        if self.plan.aggregate.table_keys:
            rows, old, late = self.aggregate.process_table(pre, partition)
        else:
            rows, old, late = self.aggregate.process(pre, partition)
        out = self._query(self.plan.main_sql, rows, "__agg_result")
        tombstones = None
        if old is not None and old.num_rows and self.plan.key_columns:
            latest = pc.max(pre.column("__ts")).as_py()
            tombstones = self._deleted_keys(self._query(self.plan.main_sql, old, "__agg_result"), out, latest)
        result = self._finish(
            out, failures, table.num_rows, stateless=False, late=late, casts=casts, tombstones=tombstones
        )
        result.counters["filtered"] = table.num_rows - pre.num_rows - len(failures)
        return result

    def _deleted_keys(self, before: pa.Table, after: pa.Table, latest: int | None) -> pa.Table:
        """Key columns of the output rows in ``before`` whose key has no row in ``after``."""
        keys = ", ".join(quote(k) for k in self.plan.key_columns)
        self.con.register("__before", before)
        self.con.register("__after", after)
        try:
            return self.con.sql(
                f"SELECT DISTINCT {keys}, CAST({'NULL' if latest is None else int(latest)} AS BIGINT) AS __rowtime "
                f"FROM __before ANTI JOIN __after USING ({keys})"
            ).to_arrow_table()
        finally:
            self.con.unregister("__before")
            self.con.unregister("__after")

    # ---- state ------------------------------------------------------------------------------------------
    def update_table(self, rows: pa.Table, tombstones: Any = None, partition: Any = 0) -> None:
        """Apply changes of the table side of a stream-table join (``tombstones``: boolean mask).

        ``partition`` is the partition of all rows, or one partition per row (an array); table and stream
        are assumed co-partitioned by the join key, so a row of partition ``p`` joins stream rows of ``p``.
        """
        if self.table_state is None:
            raise SqlError("this query has no table side to update")
        by_upper = {c.name.upper(): c.name for c in self.plan.join.right.columns} if self.plan.join else {}
        rows = rows.rename_columns([by_upper.get(n.upper(), n) for n in rows.column_names])
        if isinstance(partition, int | np.integer):
            self.table_state.update(rows, tombstones, int(partition))
            return
        parts = partition if isinstance(partition, pa.Array | pa.ChunkedArray) else pa.array(np.asarray(partition))
        if len(parts) != rows.num_rows:
            raise SqlError(f"got {len(parts)} partitions for {rows.num_rows} table rows")
        mask = None if tombstones is None else np.asarray(tombstones, dtype=bool)
        for part, positions in _partition_groups(parts):
            if positions is None:
                self.table_state.update(rows, mask, part)
            else:
                self.table_state.update(rows.take(positions), None if mask is None else mask[positions], part)

    def partitions(self) -> list[int]:
        """Partitions that have state."""
        if self.aggregate is not None:
            return self.aggregate.partitions()
        if self.sequence is not None:
            return self.sequence.partitions()
        if self.table_state is not None:
            return self.table_state.partitions()
        if self.table_join is not None:
            return self.table_join.partitions()
        return self.buffers.partitions() if self.buffers is not None else []

    def snapshot(self, partition: int) -> bytes:
        """State of one partition as bytes (Arrow IPC), for a changelog or checkpoint."""
        if self.aggregate is not None:
            return self.aggregate.snapshot(partition)
        if self.sequence is not None:
            return self.sequence.snapshot(partition)
        if self.table_state is not None:
            return self.table_state.snapshot(partition)
        return self.buffers.snapshot(partition) if self.buffers is not None else b""

    def restore(self, partition: int, data: bytes) -> None:
        """Restore one partition from :meth:`snapshot` bytes."""
        if self.aggregate is not None:
            self.aggregate.restore(partition, data)
        elif self.sequence is not None:
            self.sequence.restore(partition, data)
        elif self.table_state is not None:
            self.table_state.restore(partition, data)
        elif self.buffers is not None:
            self.buffers.restore(partition, data, *self._empty_inputs())

    def changes(self, partition: int) -> pa.Table:
        """Changelog records of ``partition`` since the last call: one per key, window, session or buffered
        row that changed (``key``, ``value``; a null value when it was dropped), then its scalar state.

        The key starts with the partition; records of several partitions may share a topic partition.
        """
        if self.aggregate is not None:
            return self.aggregate.changes(partition)
        if self.sequence is not None:
            return self.sequence.changes(partition)
        if self.table_state is not None:
            return self.table_state.changes(partition)
        if self.table_join is not None:
            return self.table_join.changes(partition)
        if self.buffers is not None:
            return self.buffers.changes(partition, *self._empty_inputs())
        return pa.table({"key": pa.array([], pa.binary()), "value": pa.array([], pa.binary())})

    def load(self, partition: int, records: pa.Table) -> None:
        """Replace the state of ``partition`` by the changelog ``records`` (``key``, ``value``, in log order)
        that :meth:`changes` wrote; records of other partitions are ignored. A whole-partition snapshot in
        ``records`` (a changelog written before per-key changes) is the base the changes apply to."""
        base = legacy_snapshot(records, partition)
        if base is not None:
            self.restore(partition, base)
        over = base is not None
        if self.aggregate is not None:
            self.aggregate.load(partition, records, over=over)
        elif self.sequence is not None:
            self.sequence.load(partition, records, over=over)
        elif self.table_state is not None:
            self.table_state.load(partition, records, over=over)
        elif self.table_join is not None:
            self.table_join.load(partition, records, over=over)
        elif self.buffers is not None:
            self.buffers.load(partition, records, *self._empty_inputs(), over=over)

    def close(self) -> None:
        self.con.close()

    def __enter__(self) -> QueryExecutor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
