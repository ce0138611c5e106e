"""SESSION windows: per key, records closer than the gap share one window; merged batch by batch in DuckDB.

A session spans ``[WINDOWSTART, WINDOWEND]``, its first and last record time. As in Kafka Streams, a
record at ``t`` joins every session of its key that ends at or after ``t - gap`` and starts at or before
``t + gap``, so one record can merge two sessions. A batch is merged set-wise: its records and the stored
sessions they can reach are sorted by key and start; a new session begins where a start exceeds the
running maximum end by more than the gap. The records of each session are pre-aggregated with one
``GROUP BY`` and the partial states of the stored sessions it absorbs are folded in, one join per absorbed
session (usually none or one). The absorbed sessions are returned as replaced rows, so the executor emits a
tombstone for each one whose bounds changed.

A record is late (counted, dropped) when the session it would land in ends before ``stream time - gap -
grace``; sessions that ended before that are closed (emitted then for EMIT FINAL) and evicted.
"""

from __future__ import annotations

import pyarrow as pa

from streamml.sql.aggregate import AggregateState
from streamml.sql.compiler import quote

_WS, _WE = quote("WINDOWSTART"), quote("WINDOWEND")


class SessionState(AggregateState):
    """Session-window aggregation state of one query, per partition."""

    @property
    def tracks_old_rows(self) -> bool:
        return not self.plan.emit_final

    def _same_key(self, a: str, b: str) -> str:
        return " AND ".join(f"{a}.{k} = {b}.{k}" for k in self.keys) or "TRUE"

    def _grouped(self, source: str) -> str:
        """``source`` pieces (``__ws``, ``__we``, ``__pid``) with ``__grp``, the merged session they belong to."""
        assert self.window is not None
        keys = ", ".join(self.keys)
        by_key = f"PARTITION BY {keys} " if keys else ""
        new = (
            f"coalesce(__ws > max(__we) OVER ({by_key}ORDER BY __ws, __we, __pid ROWS BETWEEN UNBOUNDED "
            f"PRECEDING AND 1 PRECEDING) + {self.window.size_ms}, TRUE)"
        )
        order = ", ".join([*self.keys, "__ws", "__we", "__pid"])
        return (
            f"SELECT *, sum(CAST(__new AS BIGINT)) OVER (ORDER BY {order} ROWS UNBOUNDED PRECEDING) AS __grp "
            f"FROM (SELECT *, {new} AS __new FROM {source})"
        )

    def process(self, pre: pa.Table, partition: int) -> tuple[pa.Table, pa.Table | None, int]:
        assert self.window is not None
        gap, grace = self.window.size_ms, self.window.grace_ms
        table = self._table(partition)
        con = self.con
        previous = self.stream_time[partition]
        keys = ", ".join(self.keys)
        con.register("__pre", pre)
        records = con.sql(
            f"SELECT *, greatest({previous}, max(__ts) OVER (ORDER BY __seq ROWS UNBOUNDED PRECEDING)) AS __st "
            "FROM __pre WHERE __ts IS NOT NULL"
        ).to_arrow_table()
        con.unregister("__pre")
        con.register("__rec", records)
        # stored sessions that a record of the batch can reach
        con.execute(
            f"CREATE OR REPLACE TEMP TABLE __near AS SELECT s.* FROM {table} AS s SEMI JOIN "
            f"(SELECT {keys}{', ' if keys else ''}min(__ts) AS __lo, max(__ts) AS __hi FROM __rec"
            f"{' GROUP BY ' + keys if keys else ''}) AS b "
            f"ON {self._same_key('s', 'b')} AND s.{_WE} >= b.__lo - {gap} AND s.{_WS} <= b.__hi + {gap}"
        )
        con.execute(
            "CREATE OR REPLACE TEMP TABLE __pieces AS "
            f"SELECT *, __ts AS __ws, __ts AS __we, TRUE AS __rec, __ts + {gap} + {grace} < __st AS __cand, "
            f"__seq AS __pid FROM __rec UNION ALL BY NAME SELECT {keys}{', ' if keys else ''}{_WS} AS __ws, "
            f"{_WE} AS __we, FALSE AS __rec, FALSE AS __cand, -row_number() OVER () AS __pid FROM __near"
        )
        con.unregister("__rec")
        # a record whose own session would be closed is late unless it reaches an open session that was
        # there before it (stored, or built by earlier records of the batch)
        con.execute(f"CREATE OR REPLACE TEMP TABLE __g AS {self._grouped('__pieces')}")
        reaches = (
            f"p.__grp = c.__grp AND NOT p.__cand AND p.__pid < c.__pid AND p.__we >= c.__ws - {gap} "
            f"AND p.__ws <= c.__ws + {gap} AND p.__we + {gap} + {grace} >= c.__st"
        )
        con.execute(
            "CREATE OR REPLACE TEMP TABLE __late AS SELECT c.__pid FROM __g AS c WHERE c.__cand "
            f"AND NOT EXISTS (SELECT 1 FROM __g AS p WHERE {reaches})"
        )
        late = int(con.sql("SELECT count(*) FROM __late").fetchall()[0][0])
        if late:
            kept = "(SELECT * EXCLUDE (__new, __grp) FROM __g ANTI JOIN __late USING (__pid))"
            con.execute(f"CREATE OR REPLACE TEMP TABLE __g AS {self._grouped(kept)}")
        con.execute(
            "CREATE OR REPLACE TEMP TABLE __g AS SELECT * FROM "
            "(SELECT *, bool_or(__rec) OVER (PARTITION BY __grp) AS __touched FROM __g) WHERE __touched"
        )
        old = self._merge(table)
        max_st = con.sql("SELECT max(__st) FROM __g").fetchall()[0][0]
        if max_st is not None:
            self.stream_time[partition] = max(previous, int(max_st))
        closed = f"SELECT * FROM {table} WHERE {_WE} + {gap} + {grace} < {self.stream_time[partition]}"
        rows = closed if self.plan.emit_final else "SELECT * FROM __new"
        result = con.sql(self._final_sql(rows)).to_arrow_table()
        expired = f"{_WE} + {gap} + {grace} < {self.stream_time[partition]}"
        self.changed.mark_where(table, expired)
        con.execute(f"DELETE FROM {table} WHERE {expired}")
        return result, old, late

    def _merge(self, table: str) -> pa.Table | None:
        """Fold ``__g`` into ``table``: leaves the merged sessions in ``__new``; returns the absorbed ones."""
        con = self.con
        keys = ", ".join(self.keys)
        batch = ", ".join(f"{b} AS {n}" for n, b, _ in self.partials)
        con.execute(
            f"CREATE OR REPLACE TEMP TABLE __bounds AS SELECT __grp, {keys}{', ' if keys else ''}"
            f"min(__ws) AS {_WS}, max(__we) AS {_WE} FROM __g GROUP BY __grp{', ' if keys else ''}{keys}"
        )
        con.execute(
            f"CREATE OR REPLACE TEMP TABLE __acc AS SELECT __grp, {batch}, max(__ts) AS __rowtime "
            "FROM __g WHERE __rec GROUP BY __grp"
        )
        con.execute(
            "CREATE OR REPLACE TEMP TABLE __olds AS SELECT g.__grp, "
            f"row_number() OVER (PARTITION BY g.__grp ORDER BY s.{_WS} DESC) AS __r, s.* "
            f"FROM __g AS g JOIN {table} AS s ON {self._same_key('g', 's')} AND s.{_WS} = g.__ws WHERE NOT g.__rec"
        )
        rounds = int(con.sql("SELECT coalesce(max(__r), 0) FROM __olds").fetchall()[0][0])
        # fold absorbed sessions in, latest first, each in front of what is accumulated (arrival order)
        for r in range(1, rounds + 1):
            merged = ", ".join(
                f"CASE WHEN s.__grp IS NULL THEN e.{n} ELSE {m} END AS {n}" for n, m in self.merges("s", "e")
            )
            con.execute(
                f"CREATE OR REPLACE TEMP TABLE __acc AS SELECT e.__grp, {merged}, "
                "greatest(e.__rowtime, s.__rowtime) AS __rowtime "
                f"FROM __acc AS e LEFT JOIN (SELECT * FROM __olds WHERE __r = {r}) AS s ON s.__grp = e.__grp"
            )
        columns = ", ".join(n for n, _ in self.columns)
        con.execute(f"CREATE OR REPLACE TEMP TABLE __new AS SELECT {columns} FROM __bounds JOIN __acc USING (__grp)")
        old = con.sql(self._final_sql("SELECT * FROM __olds")).to_arrow_table() if self.tracks_old_rows else None
        pk = ", ".join(self.pk)
        self.changed.mark(table, "SELECT * FROM __olds")
        self.changed.mark(table, "SELECT * FROM __new")
        con.execute(f"DELETE FROM {table} WHERE ({pk}) IN (SELECT ({pk}) FROM __olds)")
        con.execute(f"INSERT INTO {table} ({columns}) SELECT {columns} FROM __new")
        return old
