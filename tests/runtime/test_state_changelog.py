"""Query state through a real changelog: per-key changes written in transactions, one changelog partition per
source partition, restores that read only the partitions a worker owns and only committed changes."""

from __future__ import annotations

from collections.abc import Callable

import orjson
import pyarrow as pa

from streamml.kafka import Admin, BatchConsumer, Producer
from streamml.kafka.producer import TransactionalProducer
from streamml.runtime.changelog import Changelog, changelog_spec
from streamml.runtime.session import Session, wait_for
from streamml.runtime.topics import ensure_changelog_topic
from streamml.sql import SqlEngine
from tests.runtime.conftest import running

SOURCE_PARTITIONS = 3


def plan():  # type: ignore[no-untyped-def]
    engine = SqlEngine()
    engine.execute("CREATE STREAM pings (host VARCHAR KEY, ms BIGINT) WITH (KAFKA_TOPIC='pings', VALUE_FORMAT='JSON');")
    return engine.plan(
        "SELECT host, COUNT(*) AS n, SUM(ms) AS total FROM pings "
        "WINDOW TUMBLING (SIZE 1 MINUTE, GRACE PERIOD 0 SECONDS) GROUP BY host;"
    )


def batch(hosts: list[str], times: list[int], parts: list[int]) -> tuple[pa.Table, dict]:
    return pa.table({"HOST": hosts, "MS": times}), {"ROWTIME": times, "ROWPARTITION": parts}


def counts(result: object) -> dict[tuple[str, int], int]:
    table = result.table  # type: ignore[attr-defined]
    return {(r["HOST"], r["WINDOWSTART"]): r["N"] for r in table.to_pylist()}


def test_changelog_has_one_partition_per_source_partition() -> None:
    partitions, config = changelog_spec(SOURCE_PARTITIONS)
    assert partitions == SOURCE_PARTITIONS and config["cleanup.policy"] == "compact"


def test_state_survives_a_restart_and_restores_only_owned_partitions(
    kafka_config: dict, admin: Admin, unique: Callable[[str], str]
) -> None:
    topic = unique("changelog")
    log = Changelog(kafka_config, topic, ensure_changelog_topic(admin, topic, SOURCE_PARTITIONS))
    assert len(admin.describe_topic(topic).partitions) == SOURCE_PARTITIONS
    the_plan = plan()
    ex = the_plan.executor()
    producer = TransactionalProducer(kafka_config, unique("txn"))
    try:
        # partition p holds host "h<p>" and host "x", so the same key lives in several partitions
        ex.execute(*batch(["h0", "h1", "h2", "x", "x", "x"], [1_000] * 6, [0, 1, 2, 0, 1, 2]))
        producer.begin()
        assert log.write(producer, ex, range(SOURCE_PARTITIONS)) == 9  # 2 keys + stream time per partition
        producer.commit()
        # the next minute closes the first windows: their keys become tombstones
        ex.execute(*batch(["x", "x"], [61_000, 62_000], [0, 2]))
        producer.begin()
        log.write(producer, ex, [0, 2])
        producer.commit()
        ex.execute(*batch(["x"], [63_000], [0]))  # processed, but its transaction is aborted
        producer.begin()
        log.write(producer, ex, [0])
        producer.abort()
    finally:
        producer.close()
    ends = admin.watermarks(topic)
    assert ends[1][1] < ends[0][1]  # partition 1 got its changes only once: each partition its own records

    owned = plan().executor()
    read = log.restore(owned, [0, 2])
    assert read > 0 and owned.partitions() == [0, 2]
    # partition 0: the closed windows are gone; the open one holds the committed record (61 s), not the aborted
    out = owned.execute(*batch(["x", "h0"], [64_000, 64_000], [0, 0]))
    assert counts(out) == {("x", 60_000): 2, ("h0", 60_000): 1}
    out = owned.execute(*batch(["x"], [64_000], [2]))
    assert counts(out) == {("x", 60_000): 2}
    # a record of the closed window is late: the stream time came back too
    assert owned.execute(*batch(["h2"], [1_500], [2])).counters["late"] == 1

    other = plan().executor()
    assert log.restore(other, [1]) == ends[1][1] - ends[1][0] - 1  # its records, less the commit marker
    out = other.execute(*batch(["h1", "x"], [2_000, 2_000], [1, 1]))
    assert counts(out) == {("h1", 0): 2, ("x", 0): 2}


def test_a_restore_replaces_what_the_executor_held(
    kafka_config: dict, admin: Admin, unique: Callable[[str], str]
) -> None:
    """After an aborted transaction the worker reloads its partitions: uncommitted changes must not survive."""
    topic = unique("changelog")
    log = Changelog(kafka_config, topic, ensure_changelog_topic(admin, topic, 2))
    ex = plan().executor()
    ex.execute(*batch(["a"], [1_000], [1]))
    producer = TransactionalProducer(kafka_config, unique("txn"))
    try:
        producer.begin()
        log.write(producer, ex, [1])
        producer.commit()
    finally:
        producer.close()
    ex.execute(*batch(["a", "a"], [2_000, 3_000], [1, 1]))  # never committed
    log.restore(ex, [1])
    assert counts(ex.execute(*batch(["a"], [4_000], [1]))) == {("a", 0): 2}


def test_a_persistent_query_counts_on_after_a_restart(
    session: Session, kafka_config: dict, topic: Callable[..., str], unique: Callable[[str], str]
) -> None:
    """A GROUP BY over a source of several partitions, stopped and started again: the second run restores the
    counts from the changelog, so each key's latest count is the number of its records, never restarted from
    zero nor counted twice."""
    source, counts = topic(partitions=SOURCE_PARTITIONS), unique("counts")
    hosts = [f"h{i}" for i in range(12)]

    def send(rounds: int) -> None:
        values = [orjson.dumps({"ms": r}) for r in range(rounds) for _ in hosts]
        keys = [h.encode() for _ in range(rounds) for h in hosts]
        with Producer(kafka_config) as producer:
            producer.produce_batch(source, values, keys)

    latest: dict[bytes | None, int] = {}

    def counted(total: int) -> bool:
        with BatchConsumer(kafka_config, [counts], track_end=True) as reader:
            while not reader.reached_end():
                batch = reader.poll_batch(1000, 0.3)
                latest.update((k, orjson.loads(v)["N"]) for k, v in zip(batch.keys, batch.values, strict=True) if v)
        return sum(latest.values()) >= total

    session.execute(
        f"CREATE STREAM pings (host VARCHAR KEY, ms BIGINT) WITH (KAFKA_TOPIC='{source}', VALUE_FORMAT='JSON');"
        f"CREATE TABLE per_host WITH (KAFKA_TOPIC='{counts}') AS SELECT host, COUNT(*) AS n FROM pings GROUP BY host;"
    )
    send(3)
    with running(session):
        assert wait_for(lambda: counted(3 * len(hosts)), 60)
    send(2)
    with running(session):
        assert wait_for(lambda: counted(5 * len(hosts)), 60)
    assert latest == {h.encode(): 5 for h in hosts}
