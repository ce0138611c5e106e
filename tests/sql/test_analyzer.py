"""Semantic checks, suggestions, catalog serialisation, EXPLAIN and statement handling."""

from __future__ import annotations

import pytest

from streamml.errors import SqlError
from streamml.sql import Catalog, SqlEngine


def error_of(engine: SqlEngine, text: str) -> SqlError:
    with pytest.raises(SqlError) as info:
        engine.execute(text)
    return info.value


def test_unknown_stream_suggests(engine: SqlEngine) -> None:
    err = error_of(engine, "SELECT * FROM creditcardfraud_sourc;")
    assert err.message == "unknown stream or table 'CREDITCARDFRAUD_SOURC'"
    assert err.hint == "did you mean 'CREDITCARDFRAUD_SOURCE'?"
    assert (err.line, err.column) == (1, 15)


def test_unknown_column_suggests_with_position(engine: SqlEngine) -> None:
    err = error_of(engine, "SHOW STREAMS;\nSELECT Id,\n  Amout FROM creditcardfraud_source;")
    assert err.message == "unknown column 'AMOUT'"
    assert err.hint == "did you mean 'AMOUNT'?"
    assert (err.line, err.column) == (3, 3)
    assert str(err).endswith("  Amout FROM creditcardfraud_source;\n    ^")


def test_unknown_function_suggests(engine: SqlEngine) -> None:
    err = error_of(engine, "SELECT MASK_LEFTT(User, 2) FROM creditcardfraud_source;")
    assert err.message == "unknown function 'MASK_LEFTT'" and err.hint == "did you mean 'MASK_LEFT'?"


def test_type_mismatch(engine: SqlEngine) -> None:
    err = error_of(engine, "SELECT Id FROM creditcardfraud_source WHERE Amount = 'x';")
    assert "cannot compare DOUBLE with STRING" in err.message
    assert (err.line, err.column) == (1, 52)
    err = error_of(engine, "SELECT Id FROM creditcardfraud_source WHERE Amount;")
    assert "WHERE must be a BOOLEAN condition" in err.message


def test_aggregate_checks(engine: SqlEngine) -> None:
    err = error_of(engine, "SELECT User, Amount, COUNT(*) FROM creditcardfraud_source GROUP BY User;")
    assert "column 'AMOUNT' must be in GROUP BY" in err.message
    err = error_of(engine, "CREATE STREAM x AS SELECT User, COUNT(*) FROM creditcardfraud_source GROUP BY User;")
    assert "use CREATE TABLE" in err.message
    err = error_of(engine, "SELECT COUNT(*) FROM creditcardfraud_source;")
    assert "need GROUP BY" in err.message


def test_ddl_checks(engine: SqlEngine) -> None:
    assert "missing KAFKA_TOPIC" in error_of(engine, "CREATE STREAM a (x INT) WITH (VALUE_FORMAT='JSON');").message
    err = error_of(engine, "CREATE STREAM a (x INT) WITH (KAFKA_TOPIC='a', VALUE_FORMT='JSON');")
    assert err.hint == "did you mean 'VALUE_FORMAT'?"
    assert (
        "PRIMARY KEY" in error_of(engine, "CREATE TABLE a (x INT) WITH (KAFKA_TOPIC='a', VALUE_FORMAT='JSON');").message
    )
    assert (
        "already exists"
        in error_of(
            engine, "CREATE TABLE users (x INT PRIMARY KEY) WITH (KAFKA_TOPIC='a', VALUE_FORMAT='JSON');"
        ).message
    )
    err = error_of(engine, "CREATE STREAM a (x INT) WITH (KAFKA_TOPIC='a', VALUE_FORMAT='JSONN');")
    assert err.hint == "did you mean 'JSON'?"


def test_join_must_use_table_key(engine: SqlEngine) -> None:
    err = error_of(engine, "SELECT c.Id FROM creditcardfraud_source c JOIN users u ON c.User = u.gender;")
    assert "primary key of table 'USERS'" in err.message


def test_catalog_json_round_trip(engine: SqlEngine) -> None:
    engine.execute(
        "CREATE STREAM nested (k VARCHAR KEY, s STRUCT<a INT, b ARRAY<MAP<STRING, DECIMAL(10, 2)>>>) "
        "WITH (KAFKA_TOPIC='n', VALUE_FORMAT='JSON', TIMESTAMP='k', PARTITIONS=4);"
        "CREATE TABLE per_user AS SELECT User, COUNT(*) AS n FROM creditcardfraud_source "
        "WINDOW TUMBLING (SIZE 1 HOUR) GROUP BY User;"
    )
    text = engine.catalog.to_json()
    restored = Catalog.from_json(text)
    assert restored == engine.catalog
    assert restored.to_json() == text
    assert restored.get("per_user").windowed


def test_describe_show_drop_terminate(engine: SqlEngine) -> None:
    [describe] = engine.execute("DESCRIBE users EXTENDED;")
    assert "USERID" in describe.message and "VARCHAR(STRING) (primary key)" in describe.message
    assert "Value format         : AVRO" in describe.message
    [fn] = engine.execute("DESCRIBE FUNCTION mask_left;")
    assert "MASK_LEFT(STRING, INT)" in fn.message
    [created] = engine.execute("CREATE STREAM masked AS SELECT Id, MASK(User) AS u FROM creditcardfraud_source;")
    [queries] = engine.execute("SHOW QUERIES;")
    assert created.query_id in queries.message
    err = error_of(engine, "DROP STREAM masked;")
    assert "TERMINATE" in (err.hint or "")
    engine.execute(f"TERMINATE {created.query_id}; DROP STREAM masked;")
    assert engine.catalog.find("MASKED") is None
    [streams] = engine.execute("SHOW STREAMS;")
    assert "CREDITCARDFRAUD_SOURCE" in streams.message
    [listed] = engine.execute("SHOW FUNCTIONS;")
    assert "LATEST_BY_OFFSET | AGGREGATE" in listed.message


def test_explain(engine: SqlEngine) -> None:
    [result] = engine.execute(
        "EXPLAIN CREATE STREAM fraud_masked WITH (VALUE_FORMAT='AVRO') AS "
        "SELECT Id, MASK_LEFT(User, 2) AS u FROM creditcardfraud_source WHERE Class IS NOT NULL;"
    )
    text = result.message
    assert engine.catalog.find("FRAUD_MASKED") is None  # EXPLAIN does not create anything
    for part in ("Query type: STATELESS", "> [ SINK ]", "topic 'FRAUD_MASKED'", "> [ PROJECT ]",
                 "U := ksql_mask_left(\"USER\", CAST(2 AS INTEGER))", "> [ FILTER ]", "> [ SOURCE ]",
                 "Output schema: ID BIGINT, U STRING"):  # fmt: skip
        assert part in text, part
    [agg] = engine.execute(
        "EXPLAIN SELECT User, COUNT(*) FROM creditcardfraud_source WINDOW HOPPING (SIZE 10 SECONDS, "
        "ADVANCE BY 5 SECONDS) GROUP BY User;"
    )
    assert "HOPPING size 10000 ms, advance 5000 ms" in agg.message
    assert (
        "Output schema: USER STRING KEY, WINDOWSTART BIGINT KEY, WINDOWEND BIGINT KEY, KSQL_COL_0 BIGINT" in agg.message
    )


def test_unknown_query_id_is_named_with_the_closest_one() -> None:
    from streamml.errors import SqlError
    from streamml.sql import SqlEngine

    engine = SqlEngine()
    engine.execute("CREATE STREAM s (x DOUBLE) WITH (KAFKA_TOPIC='s', VALUE_FORMAT='JSON');")
    query_id = engine.execute("CREATE STREAM t AS SELECT x FROM s;")[0].query_id
    assert query_id is not None
    for statement in (f"TERMINATE {query_id}X;", f"EXPLAIN {query_id}X;"):
        with pytest.raises(SqlError, match=f"unknown query '{query_id}X'") as info:
            engine.execute(statement)
        assert info.value.hint is not None and query_id in info.value.hint
    assert "Query type" in engine.execute(f"EXPLAIN {query_id.lower()};")[0].message
    assert engine.execute(f"TERMINATE {query_id.lower()};")[0].query_id == query_id
    assert query_id not in engine.queries
