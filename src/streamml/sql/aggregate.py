"""Stateful aggregation (GROUP BY, TUMBLING and HOPPING windows) merged batch by batch in DuckDB.

State lives per input partition in a DuckDB table keyed by the group key (and window start) that holds
*partial* aggregate states. Each batch is pre-aggregated with one vectorised ``GROUP BY`` and merged with
``INSERT ... ON CONFLICT DO UPDATE``; the touched rows are the update output (and the changelog). Event
time is ``ROWTIME`` or the source's TIMESTAMP column; stream time is the running maximum per partition, and
a record whose window closed (window end + grace <= stream time) is counted as late and dropped. With
HAVING (and EMIT CHANGES), the rows a batch replaces are returned too, so that a key whose aggregate
stops satisfying HAVING gets a tombstone. SESSION windows live in :mod:`streamml.sql.session`.

Over a TABLE, a second state table holds the row each primary key contributes now; a change takes the old
row's partial states back out of its group (each function's ``undo``) before adding the new one.
"""

from __future__ import annotations

import io
import json
from typing import Any

import pyarrow as pa
from pyarrow import ipc

from streamml.sql.changes import KeyedChanges, meta_record, read_meta
from streamml.sql.compiler import quote
from streamml.sql.plan import AggregatePlan
from streamml.sql.types import BIGINT

_WS, _WE = quote("WINDOWSTART"), quote("WINDOWEND")


class AggregateState:
    """Aggregation state of one query, per partition (``snapshot``/``restore`` give bytes per partition)."""

    def __init__(self, con: Any, plan: AggregatePlan) -> None:
        self.con = con
        self.plan = plan
        self.window = plan.window
        self.keys = [quote(f"__key{i}") for i in range(len(plan.key_types))]
        self.pk = self.keys + ([_WS] if self.window else [])
        self.partials: list[tuple[str, str, str]] = []  # (column, batch sql, merge sql)
        self._merge_templates: list[tuple[str, str, list[str]]] = []  # (column, merge template, call's columns)
        self._undo_templates: list[tuple[str, str | None]] = []  # (column, template taking a state back out)
        self.columns: list[tuple[str, str]] = [
            (k, t.to_duckdb()) for k, t in zip(self.keys, plan.key_types, strict=True)
        ]
        if self.window:
            self.columns += [(_WS, "BIGINT"), (_WE, "BIGINT")]
        self.finals: list[str] = []
        for call in plan.calls:
            arg_type = call.argument.type if call.argument is not None else BIGINT
            x = quote(f"__x{call.index}") if call.argument is not None else "*"
            parts = call.function.partials(arg_type)
            names = [quote(f"__p{call.index}_{j}") for j in range(len(parts))]
            for j, part in enumerate(parts):
                self._merge_templates.append((names[j], part.merge, names))
                self._undo_templates.append((names[j], part.undo))
                self.columns.append((names[j], part.type.to_duckdb()))
            self.partials += [
                (n, part.batch.replace("{x}", x), m)
                for (n, m), part in zip(self.merges("__state", "EXCLUDED")[-len(parts) :], parts, strict=True)
            ]
            final = call.function.final.format(**{f"p{j}": f"__state.{n}" for j, n in enumerate(names)})
            self.finals.append(f"{final} AS {quote(f'__agg{call.index}')}")
        self.columns.append(("__rowtime", "BIGINT"))
        self.stream_time: dict[int, int] = {}
        self.seq: dict[int, int] = {}
        types = dict(self.columns)
        #: keys changed since the last :meth:`changes`, per partition
        self.changed = KeyedChanges(con, [(k, types[k]) for k in self.pk], self.columns)
        #: over a table: the row each primary key contributes now (its group key and arguments)
        self.row_pk = [(quote(f"__pk{i}"), t.to_duckdb()) for i, t in enumerate(plan.table_keys)]
        self.row_columns = self.row_pk + [c for c in self.columns if c[0] in self.keys]
        self.row_columns += [(quote(f"__x{c.index}"), c.argument.type.to_duckdb()) for c in plan.calls if c.argument]
        self.rows_changed = KeyedChanges(con, self.row_pk, self.row_columns, tag="rows") if self.row_pk else None
        self._rows_created: set[str] = set()

    def merges(self, s: str, e: str) -> list[tuple[str, str]]:
        """(column, SQL) merging the partial states of relation ``s`` with the later ones of ``e``."""
        out = []
        for name, template, names in self._merge_templates:
            fmt = {"s": f"{s}.{name}", "e": f"{e}.{name}"}
            for k, n in enumerate(names):
                fmt[f"s{k}"], fmt[f"e{k}"] = f"{s}.{n}", f"{e}.{n}"
            out.append((name, template.format(**fmt)))
        return out

    @property
    def tracks_old_rows(self) -> bool:
        """Whether :meth:`process` returns the replaced rows (needed for HAVING tombstones)."""
        return self.plan.having is not None and not self.plan.emit_final

    # ---- per-partition tables ---------------------------------------------------------------------------
    def _table(self, partition: int) -> str:
        name = f"__state_p{int(partition)}"
        if partition not in self.stream_time:
            cols = ", ".join(f"{n} {t}" for n, t in self.columns)
            self.con.execute(f"CREATE TABLE IF NOT EXISTS {name} ({cols}, PRIMARY KEY ({', '.join(self.pk)}))")
            self.stream_time[partition] = -(2**62)
            self.seq.setdefault(partition, 0)
        return name

    def _rows(self, partition: int) -> str:
        """The per-key rows of a table's aggregation in ``partition`` (created on first use)."""
        self._table(partition)
        name = f"__rows_p{int(partition)}"
        if name not in self._rows_created:
            cols = ", ".join(f"{n} {t}" for n, t in self.row_columns)
            pk = ", ".join(n for n, _ in self.row_pk)
            self.con.execute(f"CREATE TABLE IF NOT EXISTS {name} ({cols}, PRIMARY KEY ({pk}))")
            self._rows_created.add(name)
        return name

    def next_seq(self, partition: int, n: int) -> int:
        """Reserve ``n`` arrival sequence numbers (used by the *_BY_OFFSET aggregates); returns the first."""
        self._table(partition)
        first = self.seq[partition]
        self.seq[partition] = first + n
        return first

    def process(self, pre: pa.Table, partition: int) -> tuple[pa.Table, pa.Table | None, int]:
        """Merge one batch of pre-aggregation rows.

        Returns the updated rows and the rows they replaced (``None`` unless :attr:`tracks_old_rows`), both
        shaped for ``__agg_result``, and the number of late records dropped.
        """
        table = self._table(partition)
        con = self.con
        con.register("__pre", pre)
        late = 0
        source = "__pre"
        if self.window is not None:
            w = self.window
            previous = self.stream_time[partition]
            if w.kind == "TUMBLING":
                starts = f"__ts - (((__ts % {w.size_ms}) + {w.size_ms}) % {w.size_ms})"
                assign = f"SELECT *, {starts} AS {_WS} FROM __pre"
            else:
                adv = w.advance_ms
                last = f"(__ts - (((__ts % {adv}) + {adv}) % {adv}))"
                assign = (
                    f"SELECT * EXCLUDE (__s), __s AS {_WS} FROM (SELECT *, unnest(range({last} - {w.size_ms} + {adv}, "
                    f"{last} + {adv}, {adv})) AS __s FROM __pre) WHERE __s > __ts - {w.size_ms} AND __s >= 0"
                )
            windowed = (
                f"SELECT *, {_WS} + {w.size_ms} AS {_WE}, greatest({previous}, max(__ts) OVER "
                f"(ORDER BY __seq ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW)) AS __st FROM ({assign})"
            )
            rows = con.sql(f"SELECT * FROM ({windowed}) WHERE __ts IS NOT NULL").to_arrow_table()
            con.register("__win", rows)
            counts = con.sql(
                f"SELECT count(*) FILTER (WHERE {_WE} + {w.grace_ms} <= __st), max(__st) FROM __win"
            ).fetchall()[0]
            late = int(counts[0] or 0)
            if counts[1] is not None:
                self.stream_time[partition] = max(previous, int(counts[1]))
            source = f"(SELECT * FROM __win WHERE {_WE} + {w.grace_ms} > __st)"
        group = self.pk + ([_WE] if self.window else [])
        partial_sql = ", ".join(f"{b} AS {n}" for n, b, _ in self.partials)
        con.execute(
            f"CREATE OR REPLACE TEMP TABLE __batch AS SELECT {', '.join(group)}, {partial_sql}, max(__ts) AS __rowtime "
            f"FROM {source} GROUP BY {', '.join(group)}"
        )
        old = None
        if self.tracks_old_rows:
            pk = ", ".join(self.pk)
            replaced = f"SELECT __state.* FROM {table} AS __state SEMI JOIN __batch USING ({pk})"
            old = con.sql(self._final_sql(replaced)).to_arrow_table()
        self._merge_batch(table)
        touched = f"SELECT __state.* FROM {table} AS __state SEMI JOIN __batch USING ({', '.join(self.pk)})"
        closed = (
            f"SELECT * FROM {table} WHERE {_WE} + {self.window.grace_ms} <= {self.stream_time[partition]}"
            if self.window is not None
            else None
        )
        rows_sql = closed if (self.plan.emit_final and closed) else touched
        result = con.sql(self._final_sql(rows_sql)).to_arrow_table()
        if closed is not None:
            expired = f"{_WE} + {self.window.grace_ms} <= {self.stream_time[partition]}"  # type: ignore[union-attr]
            self.changed.mark_where(table, expired)
            con.execute(f"DELETE FROM {table} WHERE {expired}")
        con.unregister("__pre")
        return result, old, late

    def process_table(self, pre: pa.Table, partition: int) -> tuple[pa.Table, pa.Table | None, int]:
        """Merge one batch of a table's changes: the last change of each primary key replaces the row it
        contributed before (taken back out of its group: COUNT and SUM go down) by its new one (if it is
        live: not deleted, still matching WHERE). Returns what :meth:`process` returns."""
        table, rows, con = self._table(partition), self._rows(partition), self.con
        pks = ", ".join(n for n, _ in self.row_pk)
        kept = ", ".join(n for n, _ in self.row_columns)
        con.register("__pre", pre)
        con.execute(
            "CREATE OR REPLACE TEMP TABLE __changes AS SELECT * FROM (SELECT *, row_number() OVER "
            f"(PARTITION BY {pks} ORDER BY __seq DESC) AS __n FROM __pre) WHERE __n = 1"
        )
        con.unregister("__pre")
        con.execute(
            f"CREATE OR REPLACE TEMP TABLE __gone AS SELECT r.* FROM {rows} AS r SEMI JOIN __changes USING ({pks})"
        )
        con.execute(f"CREATE OR REPLACE TEMP TABLE __added AS SELECT {kept}, __ts, __seq FROM __changes WHERE __live")
        keys = ", ".join(self.keys)
        touched = f"SELECT {keys} FROM __gone UNION SELECT {keys} FROM __added"
        touched_rows = self._final_sql(f"SELECT s.* FROM {table} AS s SEMI JOIN ({touched}) USING ({keys})")
        old = con.sql(touched_rows).to_arrow_table() if self.tracks_old_rows else None
        latest = "(SELECT max(__ts) FROM __changes)"
        gone = ", ".join(f'{b} AS {n[:-1]}__m"' for n, b, _ in self.partials)
        con.execute(f"CREATE OR REPLACE TEMP TABLE __minus AS SELECT {keys}, {gone} FROM __gone GROUP BY {keys}")
        undo = ", ".join(
            f"{name} = " + str(template).format(s=name, e=f'__minus.{name[:-1]}__m"')
            for name, template in self._undo_templates  # the planner refused functions that cannot undo
        )
        match = " AND ".join(f"{table}.{k} = __minus.{k}" for k in self.keys)
        con.execute(f"UPDATE {table} SET {undo}, __rowtime = greatest(__rowtime, {latest}) FROM __minus WHERE {match}")
        partial_sql = ", ".join(f"{b} AS {n}" for n, b, _ in self.partials)
        con.execute(
            f"CREATE OR REPLACE TEMP TABLE __batch AS SELECT {keys}, {partial_sql}, max(__ts) AS __rowtime "
            f"FROM __added GROUP BY {keys}"
        )
        self._merge_batch(table)
        assert self.rows_changed is not None
        self.rows_changed.mark(rows, "SELECT * FROM __changes")
        self.changed.mark(table, touched)
        con.execute(f"DELETE FROM {rows} WHERE ({pks}) IN (SELECT ({pks}) FROM __changes)")
        con.execute(f"INSERT INTO {rows} ({kept}) SELECT {kept} FROM __added")
        return con.sql(touched_rows).to_arrow_table(), old, 0

    def _merge_batch(self, table: str) -> None:
        """Merge the partial states of ``__batch`` into ``table`` (inserted, or merged with a key's state)."""
        updates = ", ".join(f"{n} = {m}" for n, _, m in self.partials)
        names = ", ".join(n for n, _ in self.columns)
        self.con.execute(
            f"INSERT INTO {table} AS __state ({names}) SELECT {names} FROM __batch "
            f"ON CONFLICT ({', '.join(self.pk)}) DO UPDATE SET {updates}, "
            f"__rowtime = greatest(__state.__rowtime, EXCLUDED.__rowtime)"
        )
        self.changed.mark(table, "SELECT * FROM __batch")

    def _final_sql(self, rows: str) -> str:
        cols = self.keys + ([_WS, _WE] if self.window else [])
        keep = ", ".join(f"__state.{c}" for c in cols)
        return f"SELECT {keep}, {', '.join(self.finals)}, __state.__rowtime FROM ({rows}) AS __state"

    # ---- snapshots --------------------------------------------------------------------------------------
    def partitions(self) -> list[int]:
        return sorted(self.stream_time)

    def snapshot(self, partition: int) -> bytes:
        """The state of one partition as Arrow IPC bytes (stream time and sequence in the metadata)."""
        table = self.con.sql(f"SELECT * FROM {self._table(partition)}").to_arrow_table()
        meta = {"stream_time": self.stream_time[partition], "seq": self.seq.get(partition, 0)}
        table = table.replace_schema_metadata({b"streamml": json.dumps(meta).encode()})
        sink = io.BytesIO()
        with ipc.new_stream(sink, table.schema) as writer:
            writer.write_table(table)
        return sink.getvalue()

    def restore(self, partition: int, data: bytes) -> None:
        """Replace the state of one partition by a :meth:`snapshot`."""
        table = ipc.open_stream(io.BytesIO(data)).read_all()
        meta = json.loads((table.schema.metadata or {}).get(b"streamml", b"{}"))
        name = self._table(partition)
        self.con.execute(f"DELETE FROM {name}")
        self.con.register("__restore", table)
        self.con.execute(f"INSERT INTO {name} SELECT * FROM __restore")
        self.con.unregister("__restore")
        self.stream_time[partition] = int(meta.get("stream_time", -(2**62)))
        self.seq[partition] = int(meta.get("seq", 0))

    # ---- per-key changes --------------------------------------------------------------------------------
    def changes(self, partition: int) -> pa.Table:
        """Changelog records (``key``, ``value``) of the keys changed since the last call, then the
        partition's stream time and sequence."""
        rows = self.changed.drain(self._table(partition), partition)
        if self.rows_changed is not None:  # a table's aggregation: the row each key contributes, too
            rows = pa.concat_tables([rows, self.rows_changed.drain(self._rows(partition), partition)])
        meta = {"stream_time": self.stream_time[partition], "seq": self.seq.get(partition, 0)}
        return pa.concat_tables([rows, meta_record(partition, meta)])

    def drop(self, partition: int) -> None:
        """Forget the state of ``partition`` (before it is loaded from a changelog, or once it is revoked)."""
        name = self._table(partition)
        self.con.execute(f"DELETE FROM {name}")
        self.changed.forget(name)
        if self.rows_changed is not None:
            self.con.execute(f"DELETE FROM {self._rows(partition)}")
            self.rows_changed.forget(self._rows(partition))
        self.stream_time[partition] = -(2**62)
        self.seq[partition] = 0

    def load(self, partition: int, records: pa.Table, *, over: bool = False) -> None:
        """Replace the state of ``partition`` by what changelog ``records`` (in log order) say; ``over``: apply
        them over the state it holds instead."""
        if not over:
            self.drop(partition)
        self.changed.load(self._table(partition), records, partition, over=over)
        if self.rows_changed is not None:
            self.rows_changed.load(self._rows(partition), records, partition, over=over)
        meta = read_meta(records, partition)
        if meta or not over:
            self.stream_time[partition] = int(meta.get("stream_time", -(2**62)))
            self.seq[partition] = int(meta.get("seq", 0))
