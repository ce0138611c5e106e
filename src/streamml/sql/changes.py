"""Per-key change tracking of a state table, so that a changelog carries what changed, not the whole state.

Every state table (aggregates, sessions, join tables and buffers) has a primary key. The state classes mark
the keys a batch inserts, updates or deletes in a small per-table *dirty* table; :meth:`KeyedChanges.drain`
turns the marked keys into changelog records in one vectorised DuckDB query: the key is the primary key as
JSON (prefixed with the partition), the value the whole row as JSON, or no value (a tombstone) when the key
is gone. JSON written by DuckDB's ``to_json`` reads back exactly through ``json_transform`` with the
table's column types (doubles, decimals, hugeints, lists, maps, blobs, timestamps), and a row's record is
as large as the row, so state of any size is written as records of bounded size.

:meth:`KeyedChanges.load` applies records read back from a changelog: the last record of each key wins and
a tombstone removes the key.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

#: changelog key of a partition's scalar state (stream time, sequence); never a row's key (those are objects)
META_KEY = '"meta"'


def key_prefix(partition: int) -> str:
    """What every changelog key of ``partition`` starts with (the same key may live in two partitions)."""
    return f"{int(partition)}|"


def _literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


class KeyedChanges:
    """Marks changed keys of state tables with primary key ``pk`` and turns them into changelog records.

    ``columns`` are the tables' (quoted name, DuckDB type) pairs, ``pk`` the (quoted name, type) pairs of
    the key; ``tag`` names the table kind in its keys when one partition has several (a join's two buffers).
    """

    def __init__(
        self, con: Any, pk: Sequence[tuple[str, str]], columns: Sequence[tuple[str, str]], tag: str = ""
    ) -> None:
        self.con = con
        self.pk = list(pk)
        self.columns = list(columns)
        self.tag = tag
        self._dirty: set[str] = set()
        #: what a key of this kind starts with, after the partition prefix
        self.key_start = '{"__tag":' + json.dumps(tag) + "," if tag else '{"'
        structure = {json.loads(name) if name.startswith('"') else name: kind for name, kind in self.columns}
        self._structure = _literal(json.dumps(structure))

    def _key_fields(self, alias: str) -> str:
        """``struct_pack`` arguments of the key of a row of ``alias``."""
        fields = [f"__tag := {_literal(self.tag)}"] if self.tag else []
        return ", ".join([*fields, *(f"{name} := {alias}.{name}" for name, _ in self.pk)])

    def dirty(self, table: str) -> str:
        """The dirty-key table of state table ``table`` (created on first use)."""
        name = f"{table}__dirty"
        if name not in self._dirty:
            cols = ", ".join(f"{n} {t}" for n, t in self.pk)
            keys = ", ".join(n for n, _ in self.pk)
            self.con.execute(f"CREATE TABLE IF NOT EXISTS {name} ({cols}, PRIMARY KEY ({keys}))")
            self._dirty.add(name)
        return name

    def mark(self, table: str, keys_sql: str) -> None:
        """Mark the keys ``keys_sql`` selects (its columns named as the key) as changed in ``table``."""
        keys = ", ".join(n for n, _ in self.pk)
        self.con.execute(f"INSERT OR IGNORE INTO {self.dirty(table)} SELECT DISTINCT {keys} FROM ({keys_sql})")

    def mark_where(self, table: str, condition: str) -> None:
        """Mark the keys of the rows of ``table`` that satisfy ``condition`` (before they are deleted)."""
        keys = ", ".join(n for n, _ in self.pk)
        self.mark(table, f"SELECT {keys} FROM {table} WHERE {condition}")

    def pending(self, table: str) -> int:
        return int(self.con.sql(f"SELECT count(*) FROM {self.dirty(table)}").fetchall()[0][0])

    def drain(self, table: str, partition: int) -> pa.Table:
        """The changelog records of the keys changed since the last drain (``key``, ``value`` binary; a null
        value is a tombstone); forgets those keys."""
        dirty = self.dirty(table)
        using = ", ".join(n for n, _ in self.pk)
        row = ", ".join(f"{n} := s.{n}" for n, _ in self.columns)
        key = f"{_literal(key_prefix(partition))} || to_json(struct_pack({self._key_fields('k')}))"
        out = self.con.sql(
            f"SELECT encode({key}) AS key, "
            f"CASE WHEN s.__present THEN encode(CAST(to_json(struct_pack({row})) AS VARCHAR)) END AS value "
            f"FROM {dirty} AS k LEFT JOIN (SELECT *, TRUE AS __present FROM {table}) AS s USING ({using})"
        ).to_arrow_table()
        self.con.execute(f"DELETE FROM {dirty}")
        return out

    def forget(self, table: str) -> None:
        """Drop the marks of ``table`` (its state was replaced from the changelog)."""
        self.con.execute(f"DELETE FROM {self.dirty(table)}")

    def load(self, table: str, records: pa.Table, partition: int, *, over: bool = False) -> int:
        """Apply the latest record of each key of ``records`` (``key``, ``value``, in log order) that is of
        this kind and of ``partition``: its row, or none for a tombstone; returns the rows ``table`` holds.

        ``table`` must hold none of those keys unless ``over`` (the state is then updated in place).
        """
        start = _literal(key_prefix(partition) + self.key_start)
        ours = f"starts_with(decode(key), {start})"
        if not self.tag:  # an untagged kind shares its partition with tagged ones: not theirs
            tagged = _literal(key_prefix(partition) + '{"__tag"')
            ours += f" AND NOT starts_with(decode(key), {tagged})"
        names = ", ".join(n for n, _ in self.columns)
        records = records.append_column("__pos", pa.array(np.arange(records.num_rows, dtype=np.int64)))
        self.con.register("__records", records)
        try:
            self.con.execute(
                "CREATE OR REPLACE TEMP TABLE __latest_changes AS SELECT decode(key) AS key, value FROM "
                "(SELECT key, value, row_number() OVER (PARTITION BY key ORDER BY __pos DESC) AS __n "
                f"FROM __records WHERE {ours}) WHERE __n = 1"
            )
        finally:
            self.con.unregister("__records")
        if over:
            own = f"{_literal(key_prefix(partition))} || to_json(struct_pack({self._key_fields('s')}))"
            self.con.execute(f"DELETE FROM {table} AS s WHERE {own} IN (SELECT key FROM __latest_changes)")
        self.con.execute(
            f"INSERT INTO {table} ({names}) SELECT unnest(json_transform(decode(value), {self._structure})) "
            "FROM __latest_changes WHERE value IS NOT NULL"
        )
        self.con.execute("DROP TABLE __latest_changes")
        self.forget(table)
        return int(self.con.sql(f"SELECT count(*) FROM {table}").fetchall()[0][0])


def meta_record(partition: int, meta: dict[str, int]) -> pa.Table:
    """The changelog record of a partition's scalar state."""
    return pa.table(
        {
            "key": pa.array([(key_prefix(partition) + META_KEY).encode()], pa.binary()),
            "value": pa.array([json.dumps(meta).encode()], pa.binary()),
        }
    )


def legacy_snapshot(records: pa.Table, partition: int) -> bytes | None:
    """The latest whole-partition snapshot of ``partition`` (keyed by the bare partition number, as changelogs
    were written before they held per-key changes), if ``records`` hold one."""
    found = np.flatnonzero(
        pc.equal(records.column("key"), pa.scalar(str(int(partition)).encode(), pa.binary())).to_numpy(False)
    )
    return records.column("value")[int(found[-1])].as_py() if len(found) else None


def read_meta(records: pa.Table, partition: int) -> dict[str, int]:
    """The latest scalar state of ``partition`` in ``records`` (empty when there is none)."""
    wanted = (key_prefix(partition) + META_KEY).encode()
    found = np.flatnonzero(pc.equal(records.column("key"), pa.scalar(wanted, pa.binary())).to_numpy(False))
    if not len(found):
        return {}
    value = records.column("value")[int(found[-1])].as_py()
    return {k: int(v) for k, v in json.loads(value).items()} if value is not None else {}
