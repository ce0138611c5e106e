"""Per-key state changes: an executor hands out exactly the keys that changed, and state loaded from its
changes gives the same results as processing without interruption."""

from __future__ import annotations

import json

import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from streamml.sql import SqlEngine
from streamml.sql.executor import QueryExecutor

MIN = 60_000


@pytest.fixture
def eng() -> SqlEngine:
    engine = SqlEngine()
    engine.execute(
        "CREATE STREAM pings (host VARCHAR KEY, code INT, latency DOUBLE) WITH (KAFKA_TOPIC='pings', VALUE_FORMAT='JSON');"
        "CREATE STREAM clicks (user VARCHAR, page VARCHAR) WITH (KAFKA_TOPIC='clicks', VALUE_FORMAT='JSON');"
        "CREATE STREAM buys (user VARCHAR, amount DOUBLE) WITH (KAFKA_TOPIC='buys', VALUE_FORMAT='JSON');"
    )
    return engine


def row_keys(records: pa.Table) -> dict[tuple, bool]:
    """Changed row keys (without the partition prefix, meta left out) -> whether the record has a value."""
    out = {}
    for key, value in zip(records.column("key").to_pylist(), records.column("value").to_pylist(), strict=True):
        text = key.decode().split("|", 1)[1]
        if text.startswith("{"):
            out[tuple(json.loads(text).values())] = value is not None
    return out


def feed(ex: QueryExecutor, hosts: list[str], times: list[int], part: int = 0) -> pa.Table:
    n = len(hosts)
    return ex.execute(
        pa.table({"HOST": hosts, "CODE": list(range(n)), "LATENCY": [0.1 * i for i in range(n)]}),
        {"ROWTIME": times, "ROWPARTITION": [part] * n},
    ).table


def test_changes_hold_exactly_the_changed_keys(eng: SqlEngine) -> None:
    ex = eng.plan("SELECT host, COUNT(*) AS n, SUM(latency) AS s FROM pings GROUP BY host;").executor()
    feed(ex, ["a", "b", "c"], [1, 2, 3])
    assert row_keys(ex.changes(0)) == {("a",): True, ("b",): True, ("c",): True}
    assert row_keys(ex.changes(0)) == {}  # nothing changed since
    feed(ex, ["b", "b"], [4, 5])
    assert row_keys(ex.changes(0)) == {("b",): True}


def test_closed_windows_become_tombstones(eng: SqlEngine) -> None:
    ex = eng.plan(
        "SELECT host, COUNT(*) AS n FROM pings WINDOW TUMBLING (SIZE 1 MINUTE, GRACE PERIOD 0 SECONDS) GROUP BY host;"
    ).executor()
    feed(ex, ["a", "b"], [1_000, 2_000])
    assert row_keys(ex.changes(0)) == {("a", 0): True, ("b", 0): True}
    feed(ex, ["a"], [MIN + 1])  # closes the first window of both keys
    assert row_keys(ex.changes(0)) == {("a", 0): False, ("b", 0): False, ("a", MIN): True}


def test_session_merge_drops_the_absorbed_session(eng: SqlEngine) -> None:
    ex = eng.plan(
        "SELECT host, COUNT(*) AS n FROM pings WINDOW SESSION (30 SECONDS, GRACE PERIOD 1 HOUR) GROUP BY host;"
    ).executor()
    feed(ex, ["a", "a"], [0, 50_000])
    assert row_keys(ex.changes(0)) == {("a", 0): True, ("a", 50_000): True}
    feed(ex, ["a"], [25_000])  # bridges both sessions: one session starting at 0 remains
    assert row_keys(ex.changes(0)) == {("a", 0): True, ("a", 50_000): False}


def test_partitions_keep_their_own_changes(eng: SqlEngine) -> None:
    plan = eng.plan("SELECT host, COUNT(*) AS n FROM pings GROUP BY host;")
    ex = plan.executor()
    ex.execute(pa.table({"HOST": ["a", "a", "b"]}), {"ROWTIME": [1, 2, 3], "ROWPARTITION": [0, 1, 1]})
    zero, one = ex.changes(0), ex.changes(1)
    assert row_keys(zero) == {("a",): True} and row_keys(one) == {("a",): True, ("b",): True}
    fresh = plan.executor()
    both = pa.concat_tables([zero, one])
    fresh.load(1, both)  # records of partition 0 in the same log are ignored
    out = fresh.execute(pa.table({"HOST": ["a"]}), {"ROWTIME": [4], "ROWPARTITION": [1]})
    assert out.table.column("N").to_pylist() == [2]
    assert fresh.execute(pa.table({"HOST": ["b"]}), {"ROWPARTITION": [0]}).table.column("N").to_pylist() == [1]


def test_stream_join_buffers_come_back_from_changes(eng: SqlEngine) -> None:
    plan = eng.plan(
        "SELECT c.user AS user, c.page, b.amount FROM clicks c LEFT JOIN buys b WITHIN 1 MINUTE GRACE PERIOD 0 SECONDS "
        "ON c.user = b.user EMIT CHANGES;"
    )
    ex = plan.executor()
    ex.execute(pa.table({"USER": ["u1", "u2"], "PAGE": ["p1", "p2"]}), {"ROWTIME": [1_000, 2_000]})
    ex.execute(pa.table({"USER": ["u2"], "AMOUNT": [1.0]}), {"ROWTIME": [90_000]}, side="right")
    log = pa.concat_tables([ex.changes(0)])
    ex.execute(pa.table({"USER": ["u3"], "AMOUNT": [2.0]}), {"ROWTIME": [400_000]}, side="right")
    expired = ex.changes(0)
    assert sum(v is None for v in expired.column("value").to_pylist()) == 3  # both clicks and the buy expired
    fresh = plan.executor()
    fresh.load(0, log)
    out = fresh.execute(pa.table({"USER": ["u2"], "PAGE": ["p3"]}), {"ROWTIME": [100_000]})
    assert out.table.to_pylist() == [{"USER": "u2", "PAGE": "p3", "AMOUNT": 1.0}]


def test_table_side_changes(eng: SqlEngine) -> None:
    eng.execute(
        "CREATE TABLE users (userid VARCHAR PRIMARY KEY, tier VARCHAR) WITH (KAFKA_TOPIC='u', VALUE_FORMAT='JSON');"
    )
    plan = eng.plan("SELECT c.page, u.tier FROM clicks c JOIN users u ON c.user = u.userid;")
    ex = plan.executor()
    ex.update_table(pa.table({"userid": ["x", "y"], "tier": ["gold", "blue"]}))
    log = ex.changes(0)
    ex.update_table(pa.table({"userid": ["y"], "tier": [None]}), [True])
    log = pa.concat_tables([log, ex.changes(0)])
    assert row_keys(log) == {("x",): True, ("y",): False}
    fresh = plan.executor()
    fresh.load(0, log)
    out = fresh.execute(pa.table({"USER": ["x", "y"], "PAGE": ["p", "q"]}))
    assert out.table.to_pylist() == [{"PAGE": "p", "TIER": "gold"}]


QUERIES = [
    "SELECT host, COUNT(*) AS n, SUM(latency) AS s, COLLECT_LIST(code) AS codes, LATEST_BY_OFFSET(code) AS last "
    "FROM pings GROUP BY host;",
    "SELECT host, COUNT(*) AS n, AVG(latency) AS a FROM pings "
    "WINDOW HOPPING (SIZE 2 MINUTES, ADVANCE BY 1 MINUTE, GRACE PERIOD 1 MINUTE) GROUP BY host;",
    "SELECT host, COUNT(*) AS n, MAX(latency) AS m FROM pings "
    "WINDOW SESSION (40 SECONDS, GRACE PERIOD 30 SECONDS) GROUP BY host;",
    "SELECT host, COUNT(*) AS n FROM pings WINDOW TUMBLING (SIZE 1 MINUTE, GRACE PERIOD 0 SECONDS) "
    "GROUP BY host HAVING COUNT(*) > 1;",
]

batches = st.lists(
    st.lists(
        st.tuples(st.sampled_from(["a", "b", "c"]), st.integers(0, 400_000), st.integers(0, 1)),
        min_size=1,
        max_size=8,
    ),
    min_size=1,
    max_size=6,
)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(query=st.sampled_from(QUERIES), stream=batches, restart=st.integers(0, 5))
def test_restart_from_changes_gives_the_same_results(eng: SqlEngine, query: str, stream: list, restart: int) -> None:
    """Processing, writing the changes at every batch, and restarting from the log after batch ``restart``
    outputs exactly what uninterrupted processing outputs."""
    plan = eng.plan(query)

    def run(ex: QueryExecutor, batch: list) -> list:
        hosts, times, parts = (list(x) for x in zip(*batch, strict=True))
        out = ex.execute(
            pa.table({"HOST": hosts, "CODE": times, "LATENCY": [t / 7 for t in times]}),
            {"ROWTIME": times, "ROWPARTITION": parts},
        )
        return sorted(map(str, out.table.to_pylist())) + sorted(map(str, out.tombstones.to_pylist()))

    whole = plan.executor()
    expected = [run(whole, b) for b in stream]
    ex = plan.executor()
    log: list[pa.Table] = []
    got = []
    for i, batch in enumerate(stream):
        if i == restart:
            ex.close()
            ex = plan.executor()
            records = (
                pa.concat_tables(log)
                if log
                else pa.table({"key": pa.array([], pa.binary()), "value": pa.array([], pa.binary())})
            )
            for p in (0, 1):
                ex.load(p, records)
        got.append(run(ex, batch))
        log += [ex.changes(p) for p in (0, 1)]
    assert got == expected


def test_changes_apply_over_a_whole_partition_snapshot(eng: SqlEngine) -> None:
    """A changelog written before per-key changes holds one snapshot per partition, keyed by its number: it is
    the base that the later per-key changes update."""
    plan = eng.plan("SELECT host, COUNT(*) AS n FROM pings WINDOW TUMBLING (SIZE 1 MINUTE) GROUP BY host;")
    ex = plan.executor()
    feed(ex, ["a", "b"], [1_000, 2_000], part=2)
    ex.changes(2)
    old = pa.table({"key": pa.array([b"2"], pa.binary()), "value": pa.array([ex.snapshot(2)], pa.binary())})
    feed(ex, ["a", "c"], [3_000, 4_000], part=2)
    log = pa.concat_tables([old, ex.changes(2)])
    fresh = plan.executor()
    fresh.load(2, log)
    out = fresh.execute(pa.table({"HOST": ["a", "b", "c"]}), {"ROWTIME": [5_000] * 3, "ROWPARTITION": [2] * 3})
    assert {r["HOST"]: r["N"] for r in out.table.to_pylist()} == {"a": 3, "b": 2, "c": 2}
