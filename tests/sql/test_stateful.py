"""Windowed and non-windowed aggregation: merging across batches, grace, late records, snapshots."""

from __future__ import annotations

import pyarrow as pa
import pytest

from streamml.sql import SqlEngine

MIN = 60_000


@pytest.fixture
def agg_engine() -> SqlEngine:
    eng = SqlEngine()
    eng.execute(
        "CREATE STREAM pings (host VARCHAR KEY, ms BIGINT, latency DOUBLE, code INT, note VARCHAR) "
        "WITH (KAFKA_TOPIC='pings', VALUE_FORMAT='JSON');"
        "CREATE STREAM timed (host VARCHAR, ts BIGINT, v INT) "
        "WITH (KAFKA_TOPIC='timed', VALUE_FORMAT='JSON', TIMESTAMP='ts');"
    )
    return eng


def rows(result: object, *order: str) -> list[dict]:
    table = result.table  # type: ignore[attr-defined]
    return sorted(table.to_pylist(), key=lambda r: tuple(r[o] for o in order))


def test_group_by_all_aggregates(agg_engine: SqlEngine) -> None:
    ex = agg_engine.plan(
        "SELECT host, COUNT(*) AS n, COUNT(note) AS notes, SUM(code) AS s, AVG(latency) AS avg, MIN(latency) AS lo, "
        "MAX(latency) AS hi, LATEST_BY_OFFSET(note) AS last, EARLIEST_BY_OFFSET(note) AS first, "
        "COUNT_DISTINCT(code) AS codes, COLLECT_LIST(code) AS all_codes FROM pings GROUP BY host;"
    ).executor()
    first = ex.execute(
        pa.table(
            {"HOST": ["a", "b", "a"], "LATENCY": [1.0, 5.0, 3.0], "CODE": [200, 500, 200], "NOTE": ["x", None, "y"]}
        )
    )
    assert rows(first, "HOST") == [
        {"HOST": "a", "N": 2, "NOTES": 2, "S": 400, "AVG": 2.0, "LO": 1.0, "HI": 3.0, "LAST": "y", "FIRST": "x",
         "CODES": 1, "ALL_CODES": [200, 200]},
        {"HOST": "b", "N": 1, "NOTES": 0, "S": 500, "AVG": 5.0, "LO": 5.0, "HI": 5.0, "LAST": None, "FIRST": None,
         "CODES": 1, "ALL_CODES": [500]},
    ]  # fmt: skip
    second = ex.execute(pa.table({"HOST": ["a", None], "LATENCY": [8.0, 1.0], "CODE": [404, 1], "NOTE": [None, "z"]}))
    assert rows(second, "HOST") == [
        {"HOST": "a", "N": 3, "NOTES": 2, "S": 804, "AVG": 4.0, "LO": 1.0, "HI": 8.0, "LAST": "y", "FIRST": "x",
         "CODES": 2, "ALL_CODES": [200, 200, 404]},
    ]  # fmt: skip
    assert second.counters["filtered"] == 1  # NULL group key


def test_having_and_expressions_over_aggregates(agg_engine: SqlEngine) -> None:
    ex = agg_engine.plan(
        "SELECT host, SUM(code) / COUNT(*) AS mean_code FROM pings GROUP BY host HAVING COUNT(*) > 1;"
    ).executor()
    out = ex.execute(pa.table({"HOST": ["a", "b", "a"], "CODE": [100, 1, 300]}))
    assert rows(out, "HOST") == [{"HOST": "a", "MEAN_CODE": 200}]


def test_hopping_window(agg_engine: SqlEngine) -> None:
    ex = agg_engine.plan(
        "SELECT host, COUNT(*) AS n FROM pings WINDOW HOPPING (SIZE 2 MINUTES, ADVANCE BY 1 MINUTE) GROUP BY host;"
    ).executor()
    out = ex.execute(pa.table({"HOST": ["a", "a"]}), {"ROWTIME": [30_000, 90_000]})
    assert [(r["WINDOWSTART"], r["WINDOWEND"], r["N"]) for r in rows(out, "WINDOWSTART")] == [
        (0, 2 * MIN, 2),
        (MIN, 3 * MIN, 1),
    ]


def test_late_records_beyond_grace_are_dropped_and_counted(agg_engine: SqlEngine) -> None:
    ex = agg_engine.plan(
        "SELECT host, COUNT(*) AS n FROM pings WINDOW TUMBLING (SIZE 5 MINUTES, GRACE PERIOD 1 MINUTE) GROUP BY host;"
    ).executor()
    ex.execute(pa.table({"HOST": ["a", "a"]}), {"ROWTIME": [MIN, 2 * MIN]})
    # stream time moves to 6:30; window [0, 5) closes at 6:00, so the record at 4:00 is late
    out = ex.execute(pa.table({"HOST": ["a", "a", "a"]}), {"ROWTIME": [5 * MIN + 30_000, 6 * MIN + 30_000, 4 * MIN]})
    assert out.counters["late"] == 1
    assert [(r["WINDOWSTART"], r["N"]) for r in rows(out, "WINDOWSTART")] == [(5 * MIN, 2)]
    # within grace: stream time 5:30 -> a record for [0, 5) still counts
    ex2 = agg_engine.plan(
        "SELECT host, COUNT(*) AS n FROM pings WINDOW TUMBLING (SIZE 5 MINUTES, GRACE PERIOD 1 MINUTE) GROUP BY host;"
    ).executor()
    out = ex2.execute(pa.table({"HOST": ["a", "a"]}), {"ROWTIME": [5 * MIN + 30_000, 4 * MIN]})
    assert out.counters["late"] == 0
    assert [(r["WINDOWSTART"], r["N"]) for r in rows(out, "WINDOWSTART")] == [(0, 1), (5 * MIN, 1)]


def test_emit_final_only_emits_closed_windows(agg_engine: SqlEngine) -> None:
    ex = agg_engine.plan(
        "SELECT host, COUNT(*) AS n FROM pings WINDOW TUMBLING (SIZE 1 MINUTE, GRACE PERIOD 0 SECONDS) "
        "GROUP BY host EMIT FINAL;"
    ).executor()
    assert ex.execute(pa.table({"HOST": ["a", "a"]}), {"ROWTIME": [1_000, 2_000]}).table.num_rows == 0
    out = ex.execute(pa.table({"HOST": ["b"]}), {"ROWTIME": [61_000]})
    assert out.table.to_pylist() == [{"HOST": "a", "WINDOWSTART": 0, "WINDOWEND": MIN, "N": 2}]


def test_event_time_from_timestamp_column(agg_engine: SqlEngine) -> None:
    ex = agg_engine.plan(
        "SELECT host, SUM(v) AS total FROM timed WINDOW TUMBLING (SIZE 1 MINUTE) GROUP BY host;"
    ).executor()
    out = ex.execute(pa.table({"HOST": ["a", "a"], "TS": [1_000, 61_000], "V": [1, 2]}), {"ROWTIME": [0, 0]})
    assert [(r["WINDOWSTART"], r["TOTAL"]) for r in rows(out, "WINDOWSTART")] == [(0, 1), (MIN, 2)]
    assert sorted(out.timestamps.to_pylist()) == [1_000, 61_000]


def test_snapshot_and_restore(agg_engine: SqlEngine) -> None:
    plan = agg_engine.plan(
        "SELECT host, COUNT(*) AS n, COLLECT_LIST(code) AS codes FROM pings "
        "WINDOW TUMBLING (SIZE 1 HOUR) GROUP BY host;"
    )
    ex = plan.executor()
    ex.execute(pa.table({"HOST": ["a", "b"], "CODE": [1, 2]}), {"ROWTIME": [10, 20], "ROWPARTITION": [3, 3]})
    assert ex.partitions() == [3]
    data = ex.snapshot(3)
    ex.close()
    fresh = plan.executor()
    fresh.restore(3, data)
    out = fresh.execute(pa.table({"HOST": ["a"], "CODE": [7]}), {"ROWTIME": [30], "ROWPARTITION": [3]})
    assert out.table.to_pylist() == [{"HOST": "a", "WINDOWSTART": 0, "WINDOWEND": 3_600_000, "N": 2, "CODES": [1, 7]}]
    # another partition has its own state
    other = fresh.execute(pa.table({"HOST": ["a"], "CODE": [9]}), {"ROWTIME": [30], "ROWPARTITION": [0]})
    assert other.table.column("N").to_pylist() == [1]


def test_join_state_snapshot(engine: SqlEngine) -> None:
    plan = engine.plan("SELECT c.Id, u.gender FROM creditcardfraud_source c JOIN users u ON c.User = u.userid;")
    ex = plan.executor()
    ex.update_table(pa.table({"userid": ["Hans"], "gender": ["M"], "regionid": ["R1"]}))
    data = ex.snapshot(0)
    fresh = plan.executor()
    fresh.restore(0, data)
    out = fresh.execute(pa.table({"Id": [1, 2], "User": ["Hans", "Eve"]}))
    assert out.table.to_pylist() == [{"ID": 1, "GENDER": "M"}]


def test_stream_stream_join_within(agg_engine: SqlEngine) -> None:
    agg_engine.execute(
        "CREATE STREAM clicks (user VARCHAR, page VARCHAR) WITH (KAFKA_TOPIC='clicks', VALUE_FORMAT='JSON');"
        "CREATE STREAM buys (user VARCHAR, amount DOUBLE) WITH (KAFKA_TOPIC='buys', VALUE_FORMAT='JSON');"
    )
    plan = agg_engine.plan(
        "SELECT c.user AS user, c.page, b.amount FROM clicks c LEFT JOIN buys b WITHIN 1 MINUTE "
        "ON c.user = b.user EMIT CHANGES;"
    )
    assert [c.name for c in plan.output] == ["USER", "PAGE", "AMOUNT"]
    assert "within 60000 ms before and 60000 ms after" in plan.explain()
    ex = plan.executor()
    # left rows before any right row: LEFT JOIN emits them with NULLs
    first = ex.execute(pa.table({"USER": ["u1", "u2"], "PAGE": ["p1", "p2"]}), {"ROWTIME": [1_000, 2_000]})
    assert sorted(first.table.to_pylist(), key=lambda r: r["USER"]) == [
        {"USER": "u1", "PAGE": "p1", "AMOUNT": None},
        {"USER": "u2", "PAGE": "p2", "AMOUNT": None},
    ]
    # a right row within the window matches the buffered left row; one outside the window does not
    second = ex.execute(
        pa.table({"USER": ["u1", "u2"], "AMOUNT": [9.5, 1.0]}), {"ROWTIME": [30_000, 90_000]}, side="right"
    )
    assert second.table.to_pylist() == [{"USER": "u1", "PAGE": "p1", "AMOUNT": 9.5}]
    assert second.timestamps.to_pylist() == [30_000]
    # snapshot and restore keep both buffers
    data = ex.snapshot(0)
    fresh = plan.executor()
    fresh.restore(0, data)
    third = fresh.execute(pa.table({"USER": ["u2"], "PAGE": ["p3"]}), {"ROWTIME": [100_000]})
    assert third.table.to_pylist() == [{"USER": "u2", "PAGE": "p3", "AMOUNT": 1.0}]


def test_a_timestamp_column_is_the_records_time(agg_engine: SqlEngine) -> None:
    """TIMESTAMP='ts': ROWTIME and the output records' timestamps are the column's, as in ksqlDB."""
    agg_engine.execute(
        "CREATE STREAM texts (v INT, at VARCHAR) WITH (KAFKA_TOPIC='x', VALUE_FORMAT='JSON', TIMESTAMP='at', "
        "TIMESTAMP_FORMAT='yyyy-MM-dd''T''HH:mm:ssX');"
    )
    out = (
        agg_engine.plan("SELECT v, ROWTIME AS rt FROM timed EMIT CHANGES;")
        .executor()
        .execute(pa.table({"host": ["a", "b"], "ts": [1_000, None], "v": [1, 2]}), {"ROWTIME": [7, 8]})
    )
    assert out.table.column("RT").to_pylist() == [1_000, 8] and out.timestamps.to_pylist() == [1_000, 8]
    parsed = agg_engine.plan("SELECT v FROM texts EMIT CHANGES;").executor()
    stamps = parsed.execute(pa.table({"v": [1], "at": ["2018-05-11T21:58:33Z"]}), {"ROWTIME": [0]}).timestamps
    assert stamps.to_pylist() == [1526075913000]
