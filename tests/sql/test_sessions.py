"""SESSION windows, tombstones (merged sessions, HAVING), join grace periods and the COLLECT_LIST cap."""

from __future__ import annotations

import io
from typing import Any

import pyarrow as pa
import pytest
from pyarrow import ipc

from streamml.sql import BatchResult, QueryExecutor, SqlEngine

SEC = 1_000


@pytest.fixture
def eng() -> SqlEngine:
    e = SqlEngine()
    e.execute(
        "CREATE STREAM pings (host VARCHAR KEY, code INT) WITH (KAFKA_TOPIC='pings', VALUE_FORMAT='JSON');"
        "CREATE STREAM clicks (user VARCHAR, page VARCHAR) WITH (KAFKA_TOPIC='clicks', VALUE_FORMAT='JSON');"
        "CREATE STREAM buys (user VARCHAR, amount DOUBLE) WITH (KAFKA_TOPIC='buys', VALUE_FORMAT='JSON');"
    )
    return e


SESSION = "SELECT host, COUNT(*) AS n, COLLECT_LIST(code) AS codes FROM pings WINDOW SESSION ({}) GROUP BY host"


def feed(
    ex: QueryExecutor, times: list[int], hosts: list[str] | None = None, codes: list[int] | None = None, **meta: Any
) -> BatchResult:
    hosts = hosts or ["a"] * len(times)
    codes = codes or list(range(len(times)))
    return ex.execute(pa.table({"HOST": hosts, "CODE": codes}), {"ROWTIME": times, **meta})


def sessions(result: BatchResult) -> list[tuple]:
    return sorted((r["HOST"], r["WINDOWSTART"], r["WINDOWEND"], r["N"]) for r in result.table.to_pylist())


def tombstones(result: BatchResult) -> list[tuple]:
    return sorted(tuple(r.values()) for r in result.tombstones.to_pylist())


def test_session_merges_records_within_the_gap(eng: SqlEngine) -> None:
    plan = eng.plan(SESSION.format("10 SECONDS") + ";")
    assert "SESSION gap 10000 ms" in plan.explain()
    ex = plan.executor()
    out = feed(ex, [0, 5 * SEC, 1 * SEC, 30 * SEC], ["a", "a", "b", "a"], [1, 2, 3, 4])
    assert sessions(out) == [("a", 0, 5 * SEC, 2), ("a", 30 * SEC, 30 * SEC, 1), ("b", SEC, SEC, 1)]
    assert out.tombstones.num_rows == 0
    assert out.tombstones.column_names == ["HOST", "WINDOWSTART", "WINDOWEND"]
    assert sorted(out.timestamps.to_pylist()) == [SEC, 5 * SEC, 30 * SEC]
    # a record inside a session updates it in place: no tombstone
    inside = feed(ex, [3 * SEC], codes=[5])
    assert inside.table.to_pylist() == [
        {"HOST": "a", "WINDOWSTART": 0, "WINDOWEND": 5 * SEC, "N": 3, "CODES": [1, 2, 5]}
    ]
    assert inside.tombstones.num_rows == 0


def test_a_record_bridging_two_sessions_merges_them_and_tombstones_both(eng: SqlEngine) -> None:
    ex = eng.plan(SESSION.format("10 SECONDS") + ";").executor()
    feed(ex, [0, 20 * SEC], codes=[1, 2])
    out = feed(ex, [10 * SEC], codes=[3])
    assert out.table.to_pylist() == [{"HOST": "a", "WINDOWSTART": 0, "WINDOWEND": 20 * SEC, "N": 3, "CODES": [1, 2, 3]}]
    assert tombstones(out) == [("a", 0, 0), ("a", 20 * SEC, 20 * SEC)]
    assert out.tombstone_timestamps.to_pylist() == [10 * SEC, 10 * SEC]
    assert out.counters["tombstones"] == 2
    # extending a session changes its WINDOWEND: the old window gets a tombstone
    out = feed(ex, [25 * SEC])
    assert sessions(out) == [("a", 0, 25 * SEC, 4)]
    assert tombstones(out) == [("a", 0, 20 * SEC)]


def test_session_late_records_and_eviction(eng: SqlEngine) -> None:
    plan = eng.plan(SESSION.format("10 SECONDS, GRACE PERIOD 5 SECONDS") + ";")
    ex = plan.executor()
    feed(ex, [0, 5 * SEC, 30 * SEC], codes=[1, 2, 4])
    # stream time 30 s: [0, 5 s] closed at 20 s and is evicted; 14 s alone would close at 29 s: late,
    # even though 22 s (a later record of the batch) would have reached it
    out = feed(ex, [14 * SEC, 22 * SEC], codes=[5, 6])
    assert out.counters["late"] == 1
    assert out.table.to_pylist() == [
        {"HOST": "a", "WINDOWSTART": 22 * SEC, "WINDOWEND": 30 * SEC, "N": 2, "CODES": [4, 6]}
    ]
    # an old record that still reaches an open session is accepted
    feed(ex, [60 * SEC, 100 * SEC], codes=[7, 8])
    ok = feed(ex, [95 * SEC, 50 * SEC], codes=[9, 10])
    assert ok.counters["late"] == 1
    assert sessions(ok) == [("a", 95 * SEC, 100 * SEC, 2)]
    # only open sessions are kept
    state = ipc.open_stream(io.BytesIO(ex.snapshot(0))).read_all()
    assert state.column("WINDOWSTART").to_pylist() == [95 * SEC]


def test_session_snapshot_restore_and_partitions(eng: SqlEngine) -> None:
    plan = eng.plan(SESSION.format("10 SECONDS") + ";")
    ex = plan.executor()
    out = feed(ex, [0, 0, 4 * SEC], ["a", "a", "b"], ROWPARTITION=[0, 1, 1])
    assert sessions(out) == [("a", 0, 0, 1), ("a", 0, 0, 1), ("b", 4 * SEC, 4 * SEC, 1)]
    fresh = plan.executor()
    for p in ex.partitions():
        fresh.restore(p, ex.snapshot(p))
    out = feed(fresh, [8 * SEC, 9 * SEC], ["a", "a"], [7, 8], ROWPARTITION=[1, 0])
    assert [r["CODES"] for r in out.table.to_pylist()] == [[0, 8], [1, 7]]
    assert tombstones(out) == [("a", 0, 0), ("a", 0, 0)]


def test_session_emit_final_emits_closed_sessions_once(eng: SqlEngine) -> None:
    ex = eng.plan(SESSION.format("10 SECONDS, GRACE PERIOD 0 SECONDS") + " EMIT FINAL;").executor()
    assert feed(ex, [0, 5 * SEC]).table.num_rows == 0
    # stream time 16 s: [0, 5 s] is closed (5 s + gap < 16 s) and emitted; 16 s starts a new session
    out = feed(ex, [16 * SEC])
    assert sessions(out) == [("a", 0, 5 * SEC, 2)]
    out = feed(ex, [40 * SEC])
    assert sessions(out) == [("a", 16 * SEC, 16 * SEC, 1)]
    assert out.tombstones.num_rows == 0


def test_having_tombstones_a_key_that_stops_matching(eng: SqlEngine) -> None:
    ex = eng.plan("SELECT host, COUNT(*) AS n FROM pings GROUP BY host HAVING COUNT(*) < 3;").executor()
    first = feed(ex, [1, 2, 3], ["a", "a", "b"])
    assert sorted(r["HOST"] for r in first.table.to_pylist()) == ["a", "b"]
    assert first.tombstones.num_rows == 0
    second = feed(ex, [4, 5, 6, 7], ["a", "b", "c", "c"])
    assert second.table.to_pylist() == [{"HOST": "b", "N": 2}, {"HOST": "c", "N": 2}]
    assert second.tombstones.to_pylist() == [{"HOST": "a"}]
    assert second.tombstone_timestamps.to_pylist() == [7]
    # a key that no longer matches gets no further tombstones
    third = feed(ex, [8, 9, 10], ["a", "c", "b"])
    assert sorted(r["HOST"] for r in third.tombstones.to_pylist()) == ["b", "c"]


def test_having_tombstones_in_windows(eng: SqlEngine) -> None:
    ex = eng.plan(
        "SELECT host, COUNT(*) AS n FROM pings WINDOW TUMBLING (SIZE 1 MINUTE) GROUP BY host HAVING COUNT(*) = 1;"
    ).executor()
    feed(ex, [SEC])
    out = feed(ex, [2 * SEC])
    assert out.table.num_rows == 0
    assert out.tombstones.to_pylist() == [{"HOST": "a", "WINDOWSTART": 0, "WINDOWEND": 60 * SEC}]


def test_stream_join_grace_period(eng: SqlEngine) -> None:
    plan = eng.plan(
        "SELECT c.user AS user, c.page, b.amount FROM clicks c JOIN buys b "
        "WITHIN 1 MINUTE GRACE PERIOD 10 SECONDS ON c.user = b.user;"
    )
    assert plan.join is not None and plan.join.grace_ms == 10 * SEC
    assert "grace 10000 ms" in plan.explain()
    ex = plan.executor()
    ex.execute(pa.table({"USER": ["u"], "PAGE": ["now"]}), {"ROWTIME": [200 * SEC]})
    # left record at 125 s: window ends at 185 s, closed at 195 s < 200 s -> late; 135 s is within grace
    out = ex.execute(pa.table({"USER": ["u", "u"], "PAGE": ["old", "ok"]}), {"ROWTIME": [125 * SEC, 135 * SEC]})
    assert out.counters["late"] == 1 and out.counters["filtered"] == 1
    right = ex.execute(pa.table({"USER": ["u"], "AMOUNT": [1.0]}), {"ROWTIME": [190 * SEC]}, side="right")
    assert sorted(right.table.column("PAGE").to_pylist()) == ["now", "ok"]
    # a right record is late once its time + 1 minute + grace is behind stream time
    late = ex.execute(pa.table({"USER": ["u"], "AMOUNT": [2.0]}), {"ROWTIME": [129 * SEC]}, side="right")
    assert late.counters["late"] == 1 and late.table.num_rows == 0
    default = eng.plan("SELECT c.page FROM clicks c JOIN buys b WITHIN (1 SECOND, 2 SECONDS) ON c.user = b.user;")
    assert default.join is not None and default.join.grace_ms == 24 * 3_600_000
    assert default.join.within == (SEC, 2 * SEC)


def test_grace_is_rejected_for_stream_table_joins(eng: SqlEngine) -> None:
    eng.execute(
        "CREATE TABLE users (userid VARCHAR PRIMARY KEY, r VARCHAR) WITH (KAFKA_TOPIC='u', VALUE_FORMAT='JSON');"
    )
    with pytest.raises(Exception, match="WITHIN is only allowed"):
        eng.plan("SELECT c.page FROM clicks c JOIN users u WITHIN 1 SECOND GRACE PERIOD 1 SECOND ON c.user = u.userid;")


def test_collect_list_keeps_the_first_1000_values(eng: SqlEngine) -> None:
    ex = eng.plan("SELECT host, COLLECT_LIST(code) AS codes FROM pings GROUP BY host;").executor()
    feed(ex, list(range(700)), codes=list(range(700)))
    out = feed(ex, list(range(700)), codes=list(range(700, 1400)))
    codes = out.table.column("CODES").to_pylist()[0]
    assert codes == list(range(1000))
