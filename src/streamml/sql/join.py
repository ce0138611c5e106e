"""Table-side state of stream-table joins: the latest row per key, per partition, in DuckDB.

Table changes arrive as batches of rows (key and value columns). A row flagged as a tombstone deletes
its key. Within one batch the last change per key wins.
"""

from __future__ import annotations

import io
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from pyarrow import ipc

from streamml.errors import SqlError
from streamml.sql.catalog import Source
from streamml.sql.changes import KeyedChanges, meta_record, read_meta
from streamml.sql.compiler import quote


class TableState:
    """Latest row per key of the table side of a join."""

    def __init__(self, con: Any, source: Source, *, name: str = "__table", tag: str = "") -> None:
        self.con = con
        self.source = source
        self.name = name
        self.key = [quote(c.name) for c in source.key_columns]
        self._created: set[int] = set()
        columns = [(quote(c.name), c.type.to_duckdb()) for c in source.columns]
        types = dict(columns)
        #: keys changed since the last :meth:`changes`, per partition (``tag`` tells two tables apart)
        self.changed = KeyedChanges(con, [(k, types[k]) for k in self.key], columns, tag=tag)

    def table(self, partition: int) -> str:
        name = f"{self.name}_p{int(partition)}"
        if partition not in self._created:
            cols = ", ".join(f"{quote(c.name)} {c.type.to_duckdb()}" for c in self.source.columns)
            self.con.execute(f"CREATE TABLE IF NOT EXISTS {name} ({cols}, PRIMARY KEY ({', '.join(self.key)}))")
            self._created.add(partition)
        return name

    def update(self, rows: pa.Table, tombstones: Any = None, partition: int = 0) -> int:
        """Apply table changes; ``tombstones`` is an optional boolean mask (True deletes the key).

        Returns the number of keys in the table afterwards.
        """
        name = self.table(partition)
        missing = [c.name for c in self.source.columns if c.name not in rows.column_names and not c.key]
        keys_missing = [c.name for c in self.source.key_columns if c.name not in rows.column_names]
        if keys_missing:
            raise SqlError(f"table changes for '{self.source.name}' lack key column(s) {', '.join(keys_missing)}")
        for column in missing:
            c = self.source.column(column)
            assert c is not None
            rows = rows.append_column(column, pa.nulls(rows.num_rows, c.type.to_arrow()))
        mask = np.zeros(rows.num_rows, dtype=bool) if tombstones is None else np.asarray(tombstones, dtype=bool)
        rows = rows.append_column("__tombstone", pa.array(mask)).append_column(
            "__row", pa.array(np.arange(rows.num_rows, dtype=np.int64))
        )
        con = self.con
        con.register("__changes", rows)
        cols = ", ".join(quote(c.name) for c in self.source.columns)
        keys = ", ".join(self.key)
        latest = (
            f"SELECT * FROM (SELECT *, row_number() OVER (PARTITION BY {keys} ORDER BY __row DESC) AS __n "
            f"FROM __changes WHERE {' AND '.join(f'{k} IS NOT NULL' for k in self.key)}) WHERE __n = 1"
        )
        con.execute(f"CREATE OR REPLACE TEMP TABLE __latest AS {latest}")
        self.changed.mark(name, "SELECT * FROM __latest")
        con.execute(
            f"DELETE FROM {name} WHERE ({', '.join(self.key)}) IN (SELECT ({', '.join(self.key)}) FROM __latest)"
        )
        con.execute(f"INSERT INTO {name} ({cols}) SELECT {cols} FROM __latest WHERE NOT __tombstone")
        con.unregister("__changes")
        return int(con.sql(f"SELECT count(*) FROM {name}").fetchall()[0][0])

    def snapshot(self, partition: int) -> bytes:
        table = self.con.sql(f"SELECT * FROM {self.table(partition)}").to_arrow_table()
        sink = io.BytesIO()
        with ipc.new_stream(sink, table.schema) as writer:
            writer.write_table(table)
        return sink.getvalue()

    def restore(self, partition: int, data: bytes) -> None:
        name = self.table(partition)
        table = ipc.open_stream(io.BytesIO(data)).read_all()
        self.con.execute(f"DELETE FROM {name}")
        self.con.register("__restore", table)
        self.con.execute(f"INSERT INTO {name} SELECT * FROM __restore")
        self.con.unregister("__restore")

    def partitions(self) -> list[int]:
        return sorted(self._created)

    def changes(self, partition: int) -> pa.Table:
        """Changelog records of the keys changed since the last call."""
        return self.changed.drain(self.table(partition), partition)

    def load(self, partition: int, records: pa.Table, *, over: bool = False) -> None:
        """Replace the rows of ``partition`` by what changelog ``records`` say (``over``: update them)."""
        name = self.table(partition)
        if not over:
            self.con.execute(f"DELETE FROM {name}")
        self.changed.load(name, records, partition, over=over)


class TableJoinState:
    """Both sides of a table-table join: the latest row per key of each table, per partition."""

    def __init__(self, con: Any, left: Source, right: Source) -> None:
        self.con = con
        self.sides = {
            "left": TableState(con, left, name="__ltable", tag="left"),
            "right": TableState(con, right, name="__rtable", tag="right"),
        }

    def update(self, side: str, rows: pa.Table, deletes: Any, partition: int) -> None:
        """Apply one side's changes (``deletes``: boolean mask of the rows that delete their key)."""
        self.sides[side].update(rows, deletes, partition)

    def views(self, partition: int) -> None:
        """Point ``__left`` and ``__right`` at the partition's tables, for the join's queries."""
        for side, alias in (("left", "__left"), ("right", "__right")):
            self.con.execute(
                f"CREATE OR REPLACE TEMP VIEW {alias} AS SELECT * FROM {self.sides[side].table(partition)}"
            )

    def partitions(self) -> list[int]:
        return sorted(set(self.sides["left"].partitions()) | set(self.sides["right"].partitions()))

    def changes(self, partition: int) -> pa.Table:
        return pa.concat_tables([state.changes(partition) for state in self.sides.values()])

    def load(self, partition: int, records: pa.Table, *, over: bool = False) -> None:
        for state in self.sides.values():
            state.load(partition, records, over=over)


class StreamBuffers:
    """Both sides of a stream-stream join, buffered per partition for the join window.

    Stream time is the largest ``ROWTIME`` seen on either side of the partition. A left record at ``t``
    matches right records in ``[t - before, t + after]``; it is late (dropped) once ``t + after + grace`` is
    below the stream time, and a right record at ``t`` once ``t + before + grace`` is. A buffered row stays
    while a record that is not late could still match it (``ROWTIME >= stream time - grace - before -
    after``).
    """

    def __init__(self, con: Any, within: tuple[int, int], grace_ms: int) -> None:
        self.con = con
        self.before, self.after = within
        self.grace_ms = grace_ms
        self.stream_time: dict[int, int] = {}
        #: per partition, the next buffer row number (a buffered row's ``__row`` is its key in the changelog)
        self.seq: dict[int, int] = {}
        self.changed: tuple[KeyedChanges, KeyedChanges] | None = None

    def _trackers(self, names: tuple[str, str]) -> tuple[KeyedChanges, KeyedChanges]:
        if self.changed is None:
            found = []
            for name, tag in zip(names, ("l", "r"), strict=True):
                described = self.con.sql(f"DESCRIBE {name}").fetchall()
                columns = [(quote(row[0]), str(row[1])) for row in described]
                found.append(KeyedChanges(self.con, [(quote("__row"), "BIGINT")], columns, tag))
            self.changed = (found[0], found[1])
        return self.changed

    def tables(self, partition: int, left_empty: pa.Table, right_empty: pa.Table) -> tuple[str, str]:
        names = (f"__buf_l_p{int(partition)}", f"__buf_r_p{int(partition)}")
        if partition not in self.stream_time:
            for name, empty in zip(names, (left_empty, right_empty), strict=True):
                self.con.register("__empty", empty)
                self.con.execute(f"CREATE TABLE IF NOT EXISTS {name} AS SELECT * FROM __empty")
                self.con.unregister("__empty")
            self.stream_time[partition] = -(2**62)
        self.con.execute(f"CREATE OR REPLACE TEMP VIEW __left_buf AS SELECT * FROM {names[0]}")
        self.con.execute(f"CREATE OR REPLACE TEMP VIEW __right_buf AS SELECT * FROM {names[1]}")
        return names

    def late_mask(self, partition: int, side: str, rowtime: pa.ChunkedArray | pa.Array) -> np.ndarray:
        """Which records of a batch (in order) arrive after their join window plus grace closed."""
        previous = self.stream_time[partition]
        times = pc.fill_null(rowtime, previous).to_numpy().astype(np.int64)
        if len(times) == 0:
            return np.zeros(0, dtype=bool)
        stream_time = np.maximum.accumulate(np.maximum(times, previous))
        reach = self.after if side == "left" else self.before
        return np.asarray(times + reach + self.grace_ms < stream_time)

    def add(self, partition: int, side: str, rows: pa.Table, names: tuple[str, str]) -> None:
        """Buffer a processed batch of one side and expire rows that can no longer match."""
        target = names[0] if side == "left" else names[1]
        first = self.seq.get(partition, 0)
        self.seq[partition] = first + rows.num_rows
        numbers = pa.array(np.arange(first, first + rows.num_rows, dtype=np.int64))
        rows = rows.set_column(rows.schema.get_field_index("__row"), "__row", numbers)
        trackers = self._trackers(names)
        self.con.register("__add", rows)
        self.con.execute(f"INSERT INTO {target} SELECT * FROM __add")
        trackers[0 if side == "left" else 1].mark(target, 'SELECT "__row" FROM __add')
        self.con.unregister("__add")
        latest = pc.max(rows.column("ROWTIME")).as_py() if rows.num_rows else None
        if latest is not None:
            self.stream_time[partition] = max(self.stream_time[partition], int(latest))
        horizon = self.stream_time[partition] - self.grace_ms - self.before - self.after
        for name, tracker in zip(names, trackers, strict=True):
            tracker.mark_where(name, f'"ROWTIME" < {horizon}')
            self.con.execute(f'DELETE FROM {name} WHERE "ROWTIME" < {horizon}')

    def snapshot(self, partition: int) -> bytes:
        """Both buffers as two length-prefixed Arrow IPC streams."""
        out = b""
        for side in ("l", "r"):
            table = self.con.sql(f"SELECT * FROM __buf_{side}_p{int(partition)}").to_arrow_table()
            sink = io.BytesIO()
            with ipc.new_stream(sink, table.schema) as writer:
                writer.write_table(table)
            out += len(sink.getvalue()).to_bytes(8, "big") + sink.getvalue()
        return out

    def restore(self, partition: int, data: bytes, left_empty: pa.Table, right_empty: pa.Table) -> None:
        names = self.tables(partition, left_empty, right_empty)
        offset = 0
        for name in names:
            size = int.from_bytes(data[offset : offset + 8], "big")
            table = ipc.open_stream(io.BytesIO(data[offset + 8 : offset + 8 + size])).read_all()
            offset += 8 + size
            self.con.execute(f"DELETE FROM {name}")
            self.con.register("__restore", table)
            self.con.execute(f"INSERT INTO {name} SELECT * FROM __restore")
            self.con.unregister("__restore")
            latest = pc.max(table.column("ROWTIME")).as_py() if table.num_rows else None
            if latest is not None:
                self.stream_time[partition] = max(self.stream_time[partition], int(latest))
            if table.num_rows:
                self.seq[partition] = max(self.seq.get(partition, 0), int(pc.max(table.column("__row")).as_py()) + 1)

    def partitions(self) -> list[int]:
        return sorted(self.stream_time)

    def changes(self, partition: int, left_empty: pa.Table, right_empty: pa.Table) -> pa.Table:
        """Changelog records of the buffered rows added or expired since the last call, then the stream
        time and row number of the partition."""
        names = self.tables(partition, left_empty, right_empty)
        trackers = self._trackers(names)
        meta = {"stream_time": self.stream_time[partition], "seq": self.seq.get(partition, 0)}
        return pa.concat_tables(
            [*(t.drain(n, partition) for n, t in zip(names, trackers, strict=True)), meta_record(partition, meta)]
        )

    def load(
        self, partition: int, records: pa.Table, left_empty: pa.Table, right_empty: pa.Table, *, over: bool = False
    ) -> None:
        """Replace both buffers of ``partition`` by what changelog ``records`` say (``over``: update them)."""
        names = self.tables(partition, left_empty, right_empty)
        for name, tracker in zip(names, self._trackers(names), strict=True):
            if not over:
                self.con.execute(f"DELETE FROM {name}")
            tracker.load(name, records, partition, over=over)
        meta = read_meta(records, partition)
        if meta or not over:
            self.stream_time[partition] = int(meta.get("stream_time", -(2**62)))
            self.seq[partition] = int(meta.get("seq", 0))
