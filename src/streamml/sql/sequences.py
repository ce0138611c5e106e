"""Calls OVER a window of rows per key (``PREDICT('m', ...) OVER (PARTITION BY car ROWS 9 PRECEDING)``).

A sequence model reads the last k readings of one entity. The state is, per key, the last k - 1 rows of the
windowed arguments (as DOUBLE) and how many rows the key has seen; it lives per input partition in a DuckDB
table (``__wkey`` text primary key, ``__n``, ``__hist`` flattened oldest first), so changelog writing and
restoring are those of every other state table (:class:`streamml.sql.changes.KeyedChanges`).

Each batch is one vectorised pass: rows are grouped by key (stable, so each key keeps its record order),
each key's history is laid in front of its new rows in one array, every row's window is a strided view
ending at that row, and each call runs once for the batch on the rows whose key has enough rows. Rows of a
key with fewer rows than a call's window get NULL from that call. A row with a NULL or NaN windowed argument
is set aside as a failure of the function's stage and does not enter the window of later rows.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from pyarrow import ipc

from streamml.errors import SqlError
from streamml.sql.changes import KeyedChanges, meta_record
from streamml.sql.compiler import WindowCall
from streamml.sql.plan import SequencePlan

_COLUMNS = [("__wkey", "VARCHAR"), ("__n", "BIGINT"), ("__hist", "DOUBLE[]")]


@dataclass(frozen=True)
class SetAside:
    """A row a call over a window could not take: its ``__row`` id, why, and the stage charged."""

    row: int
    reason: str
    stage: str


class SequenceState:
    """The per-key row windows of one query, per partition."""

    def __init__(self, con: Any, plan: SequencePlan) -> None:
        self.con = con
        self.plan = plan
        self.history = plan.history
        self.width = len(plan.arguments)
        self._partitions: set[int] = set()
        self.changed = KeyedChanges(con, _COLUMNS[:1], _COLUMNS)

    def _table(self, partition: int) -> str:
        name = f"__seq_p{int(partition)}"
        if partition not in self._partitions:
            cols = ", ".join(f"{n} {t}" for n, t in _COLUMNS)
            self.con.execute(f"CREATE TABLE IF NOT EXISTS {name} ({cols}, PRIMARY KEY (__wkey))")
            self._partitions.add(partition)
        return name

    # ---- one batch --------------------------------------------------------------------------------------
    def process(self, pre: pa.Table, partition: int) -> tuple[pa.Table, list[SetAside]]:
        """Append ``pre``'s rows to their keys' windows and evaluate every call: ``pre`` with ``__win{i}``
        columns, without the rows set aside (returned with their reasons)."""
        values = np.column_stack(
            [_doubles(pre.column(f"__wa{j}")) for j in range(self.width)]
        ) if self.width else np.zeros((pre.num_rows, 0))  # fmt: skip
        bad = np.asarray(np.isnan(values).any(axis=1), bool)
        aside: list[SetAside] = []
        if bad.any():
            aside = self._incomplete(pre, values, bad)
            pre, values = pre.filter(pa.array(~bad)), values[~bad]
        if pre.num_rows == 0:
            return pre, aside
        keys = pc.fill_null(pre.column("__wkey"), "").combine_chunks()
        unique = pc.unique(keys)
        group = pc.index_in(keys, value_set=unique).to_numpy()
        seen, hist = self._lookup(partition, unique)
        windows = _Windows(group, values, seen, hist, self.history)
        ids = pre.column("__row").to_numpy()
        for call in self.plan.calls:
            column, failed = self._evaluate(call, windows, pre, ids)
            pre = pre.append_column(f"__win{call.index}", column)
            aside += failed
        self._store(partition, unique, seen + windows.sizes, windows.new_history())
        if len(aside) > int(bad.sum()):
            dropped = pa.array([a.row for a in aside], pa.int64())
            pre = pre.filter(pc.invert(pc.is_in(pre.column("__row"), dropped)))
        return pre, aside

    def _incomplete(self, pre: pa.Table, values: np.ndarray, bad: np.ndarray) -> list[SetAside]:
        call = self.plan.calls[0]
        first = np.argmax(np.isnan(values[bad]), axis=1)
        names = {j: sql for sql, j in self.plan.arguments.items()}
        ids = pre.column("__row").to_numpy()[bad]
        return [
            SetAside(int(row), f"{call.function.name}(...) OVER: {names[int(j)]} is NULL or NaN", call.function.stage)
            for row, j in zip(ids, first, strict=True)
        ]

    def _evaluate(
        self, call: WindowCall, windows: _Windows, pre: pa.Table, ids: np.ndarray
    ) -> tuple[pa.Array, list[SetAside]]:
        n = pre.num_rows
        complete = windows.complete(call.rows)
        arrow_type = call.result_type.to_arrow()
        m = int(complete.sum())
        if m == 0:
            return pa.nulls(n, arrow_type), []
        block = windows.ending(call.rows, complete)  # [m, rows, width]
        args: list[pa.Array] = []
        for arg in call.arguments:
            if arg.is_constant:
                args.append(pa.array([arg.value] * m, arg.type.to_arrow()))
            else:
                flat = np.ascontiguousarray(block[:, :, self.plan.arguments[arg.sql]]).reshape(-1)
                args.append(pa.FixedSizeListArray.from_arrays(pa.array(flat), call.rows))
        scored_ids = ids[complete]
        rejected: dict[int, str] = {}

        def reject(mask: np.ndarray, reason: str) -> None:
            for row in scored_ids[np.asarray(mask, bool)].tolist():
                rejected.setdefault(int(row), reason)

        kwargs: dict[str, Any] = {"reject": reject} if call.function.rejects else {}
        try:
            out = call.function.func(*args, **kwargs)
        except Exception as exc:
            reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:500]
            return pa.nulls(n, arrow_type), [SetAside(int(r), reason, call.function.stage) for r in scored_ids]
        if isinstance(out, pa.ChunkedArray):
            out = out.combine_chunks()
        if not isinstance(out, pa.Array):
            out = pa.array(np.asarray(out), type=arrow_type)
        if out.type != arrow_type:
            out = out.cast(arrow_type)
        positions = np.cumsum(complete) - 1
        column = out.take(pa.array(positions, mask=~complete))  # NULL where the window is not full yet
        return column, [SetAside(row, reason, call.function.stage) for row, reason in sorted(rejected.items())]

    # ---- state table ------------------------------------------------------------------------------------
    def _lookup(self, partition: int, keys: pa.Array) -> tuple[np.ndarray, np.ndarray]:
        """Rows seen and the history ``[keys, history, width]`` of each of ``keys`` (zeros when new)."""
        table = self._table(partition)
        self.con.register("__seq_keys", pa.table({"__wkey": keys}))
        try:
            found = self.con.sql(f"SELECT s.* FROM __seq_keys AS k JOIN {table} AS s USING (__wkey)").to_arrow_table()
        finally:
            self.con.unregister("__seq_keys")
        seen = np.zeros(len(keys), np.int64)
        hist = np.zeros((len(keys), self.history, self.width))
        if found.num_rows:
            at = pc.index_in(found.column("__wkey"), value_set=keys).to_numpy()
            seen[at] = found.column("__n").to_numpy()
            flat = pc.list_flatten(found.column("__hist")).to_numpy()
            hist[at] = flat.reshape(found.num_rows, self.history, self.width)
        return seen, hist

    def _store(self, partition: int, keys: pa.Array, seen: np.ndarray, hist: np.ndarray) -> None:
        table = self._table(partition)
        size = self.history * self.width
        flat = pa.array(hist.reshape(-1), pa.float64())
        offsets = pa.array(np.arange(len(keys) + 1, dtype=np.int32) * size)
        rows = pa.table({"__wkey": keys, "__n": pa.array(seen), "__hist": pa.ListArray.from_arrays(offsets, flat)})
        self.con.register("__seq_new", rows)
        try:
            self.con.execute(f"INSERT OR REPLACE INTO {table} SELECT * FROM __seq_new")
            self.changed.mark(table, "SELECT __wkey FROM __seq_new")
        finally:
            self.con.unregister("__seq_new")

    # ---- snapshots and changelog ------------------------------------------------------------------------
    def partitions(self) -> list[int]:
        return sorted(self._partitions)

    def snapshot(self, partition: int) -> bytes:
        table = self.con.sql(f"SELECT * FROM {self._table(partition)}").to_arrow_table()
        sink = io.BytesIO()
        with ipc.new_stream(sink, table.schema) as writer:
            writer.write_table(table)
        return sink.getvalue()

    def restore(self, partition: int, data: bytes) -> None:
        table = ipc.open_stream(io.BytesIO(data)).read_all()
        name = self._table(partition)
        self.con.execute(f"DELETE FROM {name}")
        self.con.register("__restore", table)
        try:
            self.con.execute(f"INSERT INTO {name} SELECT * FROM __restore")
        finally:
            self.con.unregister("__restore")

    def changes(self, partition: int) -> pa.Table:
        """Changelog records of the keys whose windows moved since the last call, then the window shape."""
        rows = self.changed.drain(self._table(partition), partition)
        return pa.concat_tables([rows, meta_record(partition, {"history": self.history, "width": self.width})])

    def load(self, partition: int, records: pa.Table, *, over: bool = False) -> None:
        """Replace (or, with ``over``, update) the windows of ``partition`` from changelog ``records``."""
        table = self._table(partition)
        if not over:
            self.con.execute(f"DELETE FROM {table}")
            self.changed.forget(table)
        self.changed.load(table, records, partition, over=over)
        wrong = self.con.sql(
            f"SELECT count(*) FROM {table} WHERE len(__hist) <> {self.history * self.width}"
        ).fetchall()[0][0]
        if wrong:
            raise SqlError(
                f"the changelog holds {wrong} windows of another shape than {self.history} rows of {self.width}"
                " values: the query changed; run it under a new name"
            )


class _Windows:
    """One batch's rows laid behind their keys' histories: ``[history of key 0, rows of key 0, history of
    key 1, ...]``, so the window of every row is a contiguous slice ending at the row."""

    def __init__(self, group: np.ndarray, values: np.ndarray, seen: np.ndarray, hist: np.ndarray, h: int) -> None:
        n, keys = len(group), len(seen)
        self.h = h
        self.sizes = np.bincount(group, minlength=keys)
        order = np.argsort(group, kind="stable")
        rank_sorted = np.empty(n, np.int64)
        rank_sorted[order] = np.arange(n)  # position of each row in key order
        starts = np.cumsum(self.sizes) - self.sizes  # first row of each key in key order
        self.rank = rank_sorted - starts[group]  # how many earlier rows of its key this batch has
        self.position = (group + 1) * h + rank_sorted  # where each row lies in the laid-out array
        self.before = seen[group]
        self.segments = np.arange(keys) * h + starts  # where each key's history starts
        laid = np.zeros((keys * h + n, values.shape[1]))
        if h:
            laid[(self.segments[:, None] + np.arange(h)).reshape(-1)] = hist.reshape(keys * h, -1)
        laid[self.position] = values
        self.laid = laid

    def complete(self, rows: int) -> np.ndarray:
        """Rows whose key has at least ``rows`` rows up to and including them."""
        return np.asarray(self.before + self.rank + 1 >= rows)

    def ending(self, rows: int, which: np.ndarray) -> np.ndarray:
        """The windows of ``rows`` rows ending at the ``which`` rows: ``[rows selected, rows, width]``."""
        view = np.lib.stride_tricks.sliding_window_view(self.laid, rows, axis=0)  # [positions, width, rows]
        return view[self.position[which] - rows + 1].transpose(0, 2, 1)

    def new_history(self) -> np.ndarray:
        """The last ``h`` rows of every key, after this batch: ``[keys, h, width]``."""
        if not self.h:
            return np.zeros((len(self.sizes), 0, self.laid.shape[1]))
        ends = self.segments + self.sizes  # the key's segment is h + size long; keep its last h rows
        return self.laid[(ends[:, None] + np.arange(self.h)).reshape(-1)].reshape(len(self.sizes), self.h, -1)


def _doubles(column: pa.ChunkedArray | pa.Array) -> np.ndarray:
    """A DOUBLE column as NumPy, NULL as NaN."""
    array = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    return np.asarray(pc.fill_null(array, float("nan")).to_numpy(zero_copy_only=False), np.float64)
