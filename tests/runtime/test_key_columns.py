"""Declared key columns decoded from record keys as ksqlDB does: a stream record without a key has NULL key
columns (it is processed, not dead-lettered), a table record without one is ignored, a bad key is a failure."""

from __future__ import annotations

import struct
import threading
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import orjson
import pyarrow as pa
import pytest

from streamml.config import Settings
from streamml.errors import SqlError
from streamml.runtime.codec import SinkCodec, SourceCodec
from streamml.runtime.tables import TableFeed
from streamml.sql import QueryPlan, SqlEngine


class Batch(SimpleNamespace):
    """The columns of a consumed batch that decoding reads."""

    def __init__(self, values: list[bytes | None], keys: list[bytes | None]) -> None:
        n = len(values)
        super().__init__(values=values, keys=keys, topics=["t"] * n, partitions=np.zeros(n, np.int32),
                         timestamps=np.full(n, 1_700_000_000_000, np.int64), offsets=np.arange(n, dtype=np.int64))  # fmt: skip

    def __len__(self) -> int:
        return len(self.values)


@pytest.mark.parametrize("kind", ["STREAM", "TABLE"])
def test_records_without_a_key(kind: str, tmp_path: Path) -> None:
    engine = SqlEngine()
    key = "KEY" if kind == "STREAM" else "PRIMARY KEY"
    engine.execute(f"CREATE {kind} s (ID INT {key}, V VARCHAR) WITH (KAFKA_TOPIC='t', VALUE_FORMAT='JSON', "
                   "KEY_FORMAT='KAFKA');")  # fmt: skip
    plan = engine.plan("SELECT ID, V FROM s EMIT CHANGES;")
    codec = SourceCodec(plan.sources[0], Settings(home=tmp_path))
    values = [orjson.dumps({"V": v}) for v in ("one", "none", "torn", "seven")]
    decoded = codec.decode(Batch(values, [struct.pack(">i", 1), None, b"\x01", struct.pack(">i", 7)]))  # type: ignore[arg-type]
    assert [(row, reason.startswith("key:")) for row, reason in decoded.failures] == [(2, True)]
    out = plan.executor().execute(decoded.table, decoded.meta).table.to_pylist()
    if kind == "STREAM":
        assert out == [{"ID": 1, "V": "one"}, {"ID": None, "V": "none"}, {"ID": 7, "V": "seven"}]
        assert decoded.rows.tolist() == [0, 1, 3]
    else:
        assert out == [{"ID": 1, "V": "one"}, {"ID": 7, "V": "seven"}]
        assert decoded.rows.tolist() == [0, 3]


def _engine(sql: str) -> SqlEngine:
    engine = SqlEngine()
    engine.execute(sql)
    return engine


def _query(
    engine: SqlEngine, sql: str, tmp_path: Path, registry: str | None = None
) -> tuple[QueryPlan, SourceCodec, SinkCodec]:
    (created,) = engine.execute(sql)
    plan = engine.queries[created.query_id]
    assert plan.sink is not None
    settings = Settings(home=tmp_path, schema_registry_url=registry)
    return (
        plan,
        SourceCodec(plan.sources[0], settings),
        SinkCodec(plan, engine.catalog.get(plan.sink.name), settings, []),
    )


def test_a_single_json_key_column_is_its_bare_value(tmp_path: Path) -> None:
    engine = _engine(
        "CREATE STREAM s (ID VARCHAR KEY, V INT) WITH (KAFKA_TOPIC='t', VALUE_FORMAT='JSON', KEY_FORMAT='JSON');"
    )
    plan, source, sink = _query(engine, "CREATE STREAM o AS SELECT ID, V FROM s;", tmp_path)
    decoded = source.decode(Batch([b'{"V": 1}', b'{"V": 2}', b'{"V": 3}'], [b'"abc"', b"12", b'{"ID": "x"']))  # type: ignore[arg-type]
    assert decoded.table.column("ID").to_pylist() == ["abc", "12"] and [r for r, _ in decoded.failures] == [2]
    result = plan.executor().execute(decoded.table, decoded.meta)
    out = sink.encode(result, [], decoded.rows)
    assert out.keys == [b'"abc"', b'"12"'] and out.values == [b'{"V":1}', b'{"V":2}']


def test_wrap_single_value_false_reads_and_writes_the_bare_value(tmp_path: Path) -> None:
    engine = _engine("CREATE STREAM s (V INT) WITH (KAFKA_TOPIC='t', VALUE_FORMAT='JSON', WRAP_SINGLE_VALUE=false);")
    plan, source, sink = _query(engine, "CREATE STREAM o WITH (WRAP_SINGLE_VALUE=false) AS SELECT V * 2 AS D FROM s;",
                                tmp_path)  # fmt: skip
    decoded = source.decode(Batch([b"1", b"null", b'{"V": 3}', None], [None] * 4))  # type: ignore[arg-type]
    assert decoded.table.column("V").to_pylist() == [1, None]
    assert [r for r, _ in decoded.failures] == [2] and decoded.tombstones.tolist() == [3]
    out = sink.encode(plan.executor().execute(decoded.table, decoded.meta), [None] * 4, decoded.rows)
    assert out.values == [b"2", None]  # a NULL single value is a NULL record, as ksqlDB writes it
    other, _, wrapped = _query(engine, "CREATE STREAM w AS SELECT V FROM s;", tmp_path)  # a sink wraps unless told
    values = wrapped.encode(other.executor().execute(decoded.table, decoded.meta), [None] * 4, decoded.rows).values
    assert values == [b'{"V":1}', b'{"V":null}']


@pytest.mark.parametrize(
    ("columns", "props", "message"),
    [
        ("A INT, B INT", "VALUE_FORMAT='JSON', WRAP_SINGLE_VALUE=false", "only valid for single-field value schemas"),
        ("A INT", "VALUE_FORMAT='AVRO', KEY_AVRO_SCHEMA_FULL_NAME='1x'", "not an Avro full name"),
        ("A INT", "VALUE_FORMAT='KAFKA', WRAP_SINGLE_VALUE=true", "does not support wrapping"),
        ("A INT", "VALUE_FORMAT='JSON', WRAP_SINGLE_VALUE='maybe'", "must be true or false"),
    ],
)
def test_wrap_single_value_is_refused_where_ksqldb_refuses_it(columns: str, props: str, message: str) -> None:
    with pytest.raises(SqlError, match=message):
        SqlEngine().execute(f"CREATE STREAM s ({columns}) WITH (KAFKA_TOPIC='t', {props});")


def test_a_sink_inherits_the_value_delimiter(tmp_path: Path) -> None:
    engine = _engine(
        "CREATE STREAM s (A INT, B VARCHAR) WITH (KAFKA_TOPIC='t', VALUE_FORMAT='DELIMITED', VALUE_DELIMITER='|');"
    )
    plan, source, sink = _query(engine, "CREATE STREAM o AS SELECT B, A FROM s;", tmp_path)
    decoded = source.decode(Batch([b"1|one", b"2|t,wo"], [None, None]))  # type: ignore[arg-type]
    out = sink.encode(plan.executor().execute(decoded.table, decoded.meta), [None, None], decoded.rows)
    assert out.values == [b"one|1", b"t,wo|2"]


def test_a_batch_of_only_deletes_reaches_the_join_table(tmp_path: Path) -> None:
    engine = _engine(
        "CREATE TABLE users (ID INT PRIMARY KEY, NAME VARCHAR) WITH (KAFKA_TOPIC='u', VALUE_FORMAT='JSON');"
        "CREATE STREAM clicks (ID INT KEY, URL VARCHAR) WITH (KAFKA_TOPIC='c', VALUE_FORMAT='JSON');"
    )
    plan = engine.plan("SELECT c.ID, URL, NAME FROM clicks c JOIN users u ON c.ID = u.ID EMIT CHANGES;")
    executor, users = plan.executor(), engine.catalog.get("users")
    codec = SourceCodec(users, Settings(home=tmp_path))
    feed = TableFeed.__new__(TableFeed)  # the reader is not needed to apply a batch
    feed.source, feed.codec, feed.executor, feed.lock = users, codec.with_deletes(), executor, threading.RLock()
    keys = [struct.pack(">i", 1), struct.pack(">i", 2)]
    feed.apply(Batch([b'{"NAME": "ann"}', b'{"NAME": "bob"}'], keys))  # type: ignore[arg-type]
    deletes = Batch([None], keys[:1])
    assert codec.decode(deletes).table.column_names == codec.decode(Batch([b"{}"], keys[:1])).table.column_names  # type: ignore[arg-type]
    feed.apply(deletes)  # type: ignore[arg-type]
    clicks = pa.table({"ID": pa.array([1, 2], pa.int32()), "URL": ["/a", "/b"]})
    assert executor.execute(clicks).table.to_pylist() == [{"ID": 2, "URL": "/b", "NAME": "bob"}]


@pytest.mark.parametrize("key_format", ["KAFKA", "JSON"])
def test_a_null_key_is_written_as_no_key(key_format: str, tmp_path: Path) -> None:
    engine = _engine(
        f"CREATE STREAM s (ID INT KEY, V INT) WITH (KAFKA_TOPIC='t', VALUE_FORMAT='JSON', KEY_FORMAT='{key_format}');"
    )
    plan, source, sink = _query(engine, "CREATE STREAM o AS SELECT ID, V FROM s;", tmp_path)
    key = struct.pack(">i", 5) if key_format == "KAFKA" else b"5"
    decoded = source.decode(Batch([b'{"V": 1}', b'{"V": 2}'], [None, key]))  # type: ignore[arg-type]
    out = sink.encode(plan.executor().execute(decoded.table, decoded.meta), [None, key], decoded.rows)
    assert out.keys == [None, key] and out.values == [b'{"V":1}', b'{"V":2}']


def test_several_partition_by_expressions_make_a_json_object_key(tmp_path: Path) -> None:
    engine = _engine("CREATE STREAM s (ID INT KEY, V VARCHAR) WITH (KAFKA_TOPIC='t', VALUE_FORMAT='JSON');")
    plan, source, sink = _query(engine, "CREATE STREAM o AS SELECT V, ID FROM s PARTITION BY V, ID;", tmp_path)
    decoded = source.decode(Batch([b'{"V": "a"}'], [struct.pack(">i", 7)]))  # type: ignore[arg-type]
    out = sink.encode(plan.executor().execute(decoded.table, decoded.meta), [None], decoded.rows)
    assert out.keys == [b'{"V":"a","ID":7}'] and out.values == [b"{}"]


def test_a_sinks_timestamp_column_sets_the_records_time(tmp_path: Path) -> None:
    engine = _engine("CREATE STREAM s (ID INT KEY, T BIGINT, AT VARCHAR) WITH (KAFKA_TOPIC='t', VALUE_FORMAT='JSON');")
    plan, source, sink = _query(engine, "CREATE STREAM o WITH (TIMESTAMP='T') AS SELECT ID, T FROM s;", tmp_path)
    decoded = source.decode(Batch([b'{"T": 5000}', b'{"T": null}'], [struct.pack(">i", 1)] * 2))  # type: ignore[arg-type]
    out = sink.encode(plan.executor().execute(decoded.table, decoded.meta), [None, None], decoded.rows)
    assert out.timestamps == [5000, 1_700_000_000_000]  # NULL: the input record's time
    parsed = _query(engine, "CREATE STREAM p WITH (TIMESTAMP='AT', TIMESTAMP_FORMAT='yyyy-MM-dd HH:mm') AS "
                    "SELECT ID, AT FROM s;", tmp_path)  # fmt: skip
    decoded = parsed[1].decode(Batch([b'{"AT": "1970-01-01 00:01"}'], [struct.pack(">i", 1)]))  # type: ignore[arg-type]
    assert parsed[2].encode(
        parsed[0].executor().execute(decoded.table, decoded.meta), [None], decoded.rows
    ).timestamps == [60_000]


def test_partition_by_null_writes_records_without_a_key(tmp_path: Path) -> None:
    engine = _engine("CREATE STREAM s (ID INT KEY, V INT) WITH (KAFKA_TOPIC='t', VALUE_FORMAT='JSON');")
    plan, source, sink = _query(engine, "CREATE STREAM o AS SELECT V FROM s PARTITION BY NULL;", tmp_path)
    key = struct.pack(">i", 3)
    decoded = source.decode(Batch([b'{"V": 1}'], [key]))  # type: ignore[arg-type]
    out = sink.encode(plan.executor().execute(decoded.table, decoded.meta), [key], decoded.rows)
    assert out.keys == [None] and out.values == [b'{"V":1}']


def test_a_key_column_can_be_the_timestamp_of_sources_and_sinks(tmp_path: Path) -> None:
    """TIMESTAMP may name a key column, on a source (ROWTIME is the key's value) and on a sink."""
    engine = _engine("CREATE STREAM s (T BIGINT KEY, V INT) WITH (KAFKA_TOPIC='t', VALUE_FORMAT='JSON', "
                     "TIMESTAMP='T');")  # fmt: skip
    plan, source, sink = _query(engine, "CREATE STREAM o AS SELECT T, V, ROWTIME AS RT FROM s;", tmp_path)
    decoded = source.decode(Batch([b'{"V": 1}'], [struct.pack(">q", 42_000)]))  # type: ignore[arg-type]
    result = plan.executor().execute(decoded.table, decoded.meta)
    assert result.table.column("RT").to_pylist() == [42_000]
    assert sink.encode(result, [None], decoded.rows).timestamps == [42_000]
    engine = _engine("CREATE STREAM u (ID BIGINT KEY, V INT) WITH (KAFKA_TOPIC='u', VALUE_FORMAT='JSON');")
    plan, source, sink = _query(engine, "CREATE STREAM p WITH (TIMESTAMP='ID') AS SELECT ID, V FROM u;", tmp_path)
    decoded = source.decode(Batch([b'{"V": 1}'], [struct.pack(">q", 7_000)]))  # type: ignore[arg-type]
    out = sink.encode(plan.executor().execute(decoded.table, decoded.meta), [None], decoded.rows)
    assert out.timestamps == [7_000]


def test_avro_keys_are_bare_values_and_several_a_record(tmp_path: Path) -> None:
    """One AVRO key column is its bare value (``["null", T]``), several a record, as ksqlDB writes them."""
    engine = _engine("CREATE STREAM s (ID BIGINT KEY, V INT) WITH (KAFKA_TOPIC='t', FORMAT='AVRO');")
    plan, source, sink = _query(engine, "CREATE STREAM o AS SELECT ID, V FROM s;", tmp_path)
    key = b"\x02\x54"  # union branch 1 (long), zig-zag 42
    value = sink.value.encode(pa.table({"V": pa.array([1], pa.int32())}))[0]
    decoded = source.decode(Batch([value], [key]))  # type: ignore[arg-type]
    assert decoded.table.column("ID").to_pylist() == [42]
    out = sink.encode(plan.executor().execute(decoded.table, decoded.meta), [key], decoded.rows)
    assert out.keys == [key]
    several, _, sink2 = _query(engine, "CREATE STREAM p AS SELECT ID, V FROM s PARTITION BY ID, V;", tmp_path)
    assert sink2.key is not None and sink2.key.avro_schema["name"] == "KsqlKey"  # type: ignore[attr-defined]
    keys = sink2.encode(several.executor().execute(decoded.table, decoded.meta), [key], decoded.rows).keys
    assert sink2.key.decode(keys).table.to_pylist() == [{"ID": 42, "V": 1}]


def test_avro_keys_and_unwrapped_values_use_the_registry(registry_server: tuple[str, Any], tmp_path: Path) -> None:
    url, state = registry_server
    engine = _engine("CREATE STREAM s (ID VARCHAR KEY, V INT) WITH (KAFKA_TOPIC='t', FORMAT='AVRO', "
                     "WRAP_SINGLE_VALUE=false);")  # fmt: skip
    plan, source, sink = _query(engine, "CREATE STREAM o WITH (KAFKA_TOPIC='out') AS SELECT ID, V FROM s;",
                                tmp_path, registry=url)  # fmt: skip
    writer = SourceCodec(engine.catalog.get("s"), Settings(home=tmp_path, schema_registry_url=url))
    assert writer.key is not None
    [key] = writer.key.encode(pa.table({"ID": ["a"]}))
    [value] = writer.value.encode(pa.table({"V": pa.array([5], pa.int32())}))
    assert key[0] == 0 and value[0] == 0  # the Confluent wire format, both
    assert set(state.subjects) == {"t-key", "t-value"}
    assert orjson.loads(state.schemas[state.subjects["t-key"][0]]) == ["null", "string"]
    decoded = source.decode(Batch([value], [key]))  # type: ignore[arg-type]
    assert decoded.table.to_pylist() == [{"ID": "a", "V": 5}]
    out = sink.encode(plan.executor().execute(decoded.table, decoded.meta), [key], decoded.rows)
    assert set(state.subjects) == {"t-key", "t-value", "out-key", "out-value"}
    assert orjson.loads(state.schemas[state.subjects["out-value"][0]])["type"] == "record"  # a sink wraps unless told
    reader = SourceCodec(engine.catalog.get("o"), Settings(home=tmp_path, schema_registry_url=url))
    assert reader.decode(Batch(out.values, out.keys)).table.to_pylist() == [{"ID": "a", "V": 5}]  # type: ignore[arg-type]
