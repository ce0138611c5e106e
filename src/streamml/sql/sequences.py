"""Calls OVER a window of rows per key (``PREDICT('m', ...) OVER (PARTITION BY car ROWS 9 PRECEDING)``).

A sequence model reads the last k readings of one entity. The state is, per key, the last k - 1 rows of the
windowed arguments (as DOUBLE) and how many rows the key has seen, in NumPy arrays per input partition (a
DuckDB table cost more per batch than the windows themselves); each batch's changed keys go to the changelog
as one fixed-size binary record each, built for all of them at once.

Each batch is one vectorised pass: rows are grouped by key (stable, so each key keeps its record order),
each key's history is laid in front of its new rows in one array per argument, every row's window is
the slice ending at that row, and each call runs once for the batch on the rows whose key has enough rows. Rows of a
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
from streamml.sql.changes import key_prefix, meta_record
from streamml.sql.compiler import WindowCall
from streamml.sql.plan import SequencePlan

#: what a window's changelog key starts with, after the partition
_KEY_TAG = "w:"


@dataclass(frozen=True)
class SetAside:
    """A row a call over a window could not take: its ``__row`` id, why, and the stage charged."""

    row: int
    reason: str
    stage: str


class _KeyWindows:
    """The windows of one partition: per key (``keys``), the rows seen and the last rows ``[keys, h, width]``;
    ``dirty`` marks the keys changed since the last changelog write."""

    def __init__(self, history: int, width: int) -> None:
        self.keys = pa.array([], pa.string())
        self.seen = np.zeros(0, np.int64)
        self.hist = np.zeros((0, history, width))
        self.dirty = np.zeros(0, bool)

    def rows_of(self, unique: pa.Array) -> np.ndarray:
        """The state row of each of ``unique`` (distinct keys), adding the keys it does not hold yet."""
        at = pc.fill_null(pc.index_in(unique, value_set=self.keys), -1).to_numpy(zero_copy_only=False).astype(np.int64)
        new = at < 0
        if new.any():
            count = int(new.sum())
            at[new] = np.arange(len(self.keys), len(self.keys) + count)
            self.keys = pa.concat_arrays([self.keys, unique.filter(pa.array(new))])
            self.seen = np.concatenate([self.seen, np.zeros(count, np.int64)])
            self.hist = np.concatenate([self.hist, np.zeros((count, *self.hist.shape[1:]))])
            self.dirty = np.concatenate([self.dirty, np.zeros(count, bool)])
        return at


class SequenceState:
    """The per-key row windows of one query, per partition, in memory; the changelog carries each changed
    key's record: key ``<partition>|w:<key>``, value the rows seen (int64) then the last rows (float64)."""

    def __init__(self, plan: SequencePlan) -> None:
        self.plan = plan
        self.history = plan.history
        self.width = len(plan.arguments)
        self._windows: dict[int, _KeyWindows] = {}

    def _state(self, partition: int) -> _KeyWindows:
        if partition not in self._windows:
            self._windows[partition] = _KeyWindows(self.history, self.width)
        return self._windows[partition]

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
        state = self._state(partition)
        at = state.rows_of(unique)
        seen = state.seen[at]
        windows = _Windows(group, values, seen, state.hist[at], self.history)
        ids = pre.column("__row").to_numpy()
        for call in self.plan.calls:
            column, failed = self._evaluate(call, windows, pre, ids)
            pre = pre.append_column(f"__win{call.index}", column)
            aside += failed
        state.seen[at] = seen + windows.sizes
        state.hist[at] = windows.new_history()
        state.dirty[at] = True
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
        steps = windows.steps(call.rows, complete)  # [m, rows]: positions in the laid-out columns
        args: list[pa.Array] = []
        for arg in call.arguments:
            if arg.is_constant:
                args.append(pa.array([arg.value] * m, arg.type.to_arrow()))
            else:
                flat = windows.laid[self.plan.arguments[arg.sql]][steps].reshape(-1)
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

    # ---- snapshots and changelog ------------------------------------------------------------------------
    def partitions(self) -> list[int]:
        return sorted(self._windows)

    def _records(self, partition: int, rows: np.ndarray) -> pa.Table:
        state = self._state(partition)
        if not len(rows):
            return pa.table({"key": pa.array([], pa.binary()), "value": pa.array([], pa.binary())})
        keys = pc.binary_join_element_wise(f"{key_prefix(partition)}{_KEY_TAG}", state.keys.take(pa.array(rows)), "")
        size = 8 * (1 + self.history * self.width)
        packed = np.empty((len(rows), size), np.uint8)
        packed[:, :8] = state.seen[rows].astype("<i8").view(np.uint8).reshape(len(rows), 8)
        packed[:, 8:] = state.hist[rows].astype("<f8").reshape(len(rows), -1).view(np.uint8)
        values = pa.FixedSizeBinaryArray.from_buffers(pa.binary(size), len(rows), [None, pa.py_buffer(packed)])
        return pa.table({"key": keys.cast(pa.binary()), "value": values.cast(pa.binary())})

    def snapshot(self, partition: int) -> bytes:
        """Every window of ``partition`` as Arrow IPC bytes (its changelog records)."""
        table = self._records(partition, np.arange(len(self._state(partition).keys)))
        sink = io.BytesIO()
        with ipc.new_stream(sink, table.schema) as writer:
            writer.write_table(table)
        return sink.getvalue()

    def restore(self, partition: int, data: bytes) -> None:
        self.load(partition, ipc.open_stream(io.BytesIO(data)).read_all())

    def changes(self, partition: int) -> pa.Table:
        """Changelog records of the keys whose windows moved since the last call, then the window shape."""
        state = self._state(partition)
        rows = self._records(partition, np.flatnonzero(state.dirty))
        state.dirty[:] = False
        return pa.concat_tables([rows, meta_record(partition, {"history": self.history, "width": self.width})])

    def load(self, partition: int, records: pa.Table, *, over: bool = False) -> None:
        """Replace (or, with ``over``, update) the windows of ``partition`` from changelog ``records`` (in log
        order: the last record of a key wins)."""
        prefix = f"{key_prefix(partition)}{_KEY_TAG}"
        if not over:
            self._windows.pop(partition, None)
        state = self._state(partition)
        keys = records.column("key").combine_chunks().cast(pa.string())
        mine = np.flatnonzero(pc.starts_with(keys, prefix).to_numpy(zero_copy_only=False))
        if not len(mine):
            return
        names = pc.utf8_slice_codeunits(keys.take(pa.array(mine)), len(prefix)).to_numpy(zero_copy_only=False)
        _, last = np.unique(names[::-1], return_index=True)
        latest = mine[len(mine) - 1 - last]  # the last record of each key
        values = records.column("value").combine_chunks().take(pa.array(latest))
        size = 8 * (1 + self.history * self.width)
        if values.null_count or set(pc.binary_length(values).to_pylist()) != {size}:
            raise SqlError(
                f"the changelog holds windows of another shape than {self.history} rows of {self.width} values: "
                "the query changed; run it under a new name"
            )
        packed = np.frombuffer(b"".join(values.to_pylist()), np.uint8).reshape(len(latest), size)
        at = state.rows_of(pa.array(names[len(mine) - 1 - last], pa.string()))
        state.seen[at] = packed[:, :8].copy().view("<i8")[:, 0]
        state.hist[at] = packed[:, 8:].copy().view("<f8").reshape(len(latest), self.history, self.width)
        state.dirty[at] = False


class _Windows:
    """One batch's rows laid behind their keys' histories: ``[history of key 0, rows of key 0, history of
    key 1, ...]``, one array per argument (``laid[argument, position]``), so the window of every row is the
    slice of positions ending at the row."""

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
        laid = np.zeros((values.shape[1], keys * h + n))
        if h:
            laid[:, (self.segments[:, None] + np.arange(h)).reshape(-1)] = hist.reshape(keys * h, -1).T
        laid[:, self.position] = values.T
        self.laid = laid

    def complete(self, rows: int) -> np.ndarray:
        """Rows whose key has at least ``rows`` rows up to and including them."""
        return np.asarray(self.before + self.rank + 1 >= rows)

    def steps(self, rows: int, which: np.ndarray) -> np.ndarray:
        """The positions of the windows of ``rows`` rows ending at the ``which`` rows: ``[selected, rows]``."""
        return self.position[which][:, None] + np.arange(1 - rows, 1)

    def new_history(self) -> np.ndarray:
        """The last ``h`` rows of every key, after this batch: ``[keys, h, width]``."""
        if not self.h:
            return np.zeros((len(self.sizes), 0, self.laid.shape[0]))
        ends = self.segments + self.sizes  # the key's segment is h + size long; keep its last h rows
        kept = self.laid[:, ends[:, None] + np.arange(self.h)]  # [width, keys, h]
        return np.ascontiguousarray(kept.transpose(1, 2, 0))


def _doubles(column: pa.ChunkedArray | pa.Array) -> np.ndarray:
    """A DOUBLE column as NumPy, NULL as NaN."""
    array = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    return np.asarray(pc.fill_null(array, float("nan")).to_numpy(zero_copy_only=False), np.float64)
