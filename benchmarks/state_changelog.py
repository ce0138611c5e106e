"""State changelog of a stateful query: commit cost and restore time at 1M keys.

A ``GROUP BY`` query (``COUNT``, ``SUM``, ``LATEST_BY_OFFSET``) over ``--keys`` keys spread over ``--partitions``
source partitions, its state written to a changelog on the local broker (started on free ports in a
temporary folder unless STREAMML_BOOTSTRAP is set), each write in a Kafka transaction:

- first commit: every key is new, so every key is written;
- small commit: a batch touching ``--touched`` keys of every partition after that (median of ``--rounds``);
- whole-partition snapshots: the same small commit as the former changelog made it, each touched partition
  one snapshot record (Arrow IPC of its whole state) in one transaction;
- restore: a fresh executor reading every partition, one worker's share (one partition), and the former
  restore of every partition from its latest snapshot.

    .venv/bin/python -m benchmarks.state_changelog --keys 1000000 --partitions 4 --rounds 3
"""

from __future__ import annotations

import argparse
import statistics
import time
import uuid

import numpy as np
import pyarrow as pa

from benchmarks.cluster import bench_settings
from benchmarks.report import table, write_section
from streamml.kafka import Admin, BatchConsumer, client_config
from streamml.kafka.producer import TransactionalProducer
from streamml.runtime.changelog import CHANGELOG_CONFIG, Changelog
from streamml.runtime.topics import ensure_changelog_topic
from streamml.sql import SqlEngine
from streamml.sql.executor import QueryExecutor

QUERY = "SELECT host, COUNT(*) AS n, SUM(ms) AS total, LATEST_BY_OFFSET(ms) AS last FROM pings GROUP BY host;"


def keyed_batch(keys: np.ndarray, partitions: int, time_ms: int) -> tuple[pa.Table, dict]:
    """One record per key; key ``k`` lives in partition ``k % partitions``."""
    hosts = pa.array(np.char.add("host-", keys.astype(str)))
    data = pa.table({"HOST": hosts, "MS": pa.array(keys % 1000)})
    meta = {"ROWTIME": np.full(len(keys), time_ms, np.int64), "ROWPARTITION": (keys % partitions).astype(np.int32)}
    return data, meta


def commit(log: Changelog, producer: TransactionalProducer, ex: QueryExecutor, parts: list[int]) -> tuple[float, int]:
    start = time.perf_counter()
    producer.begin()
    sent = log.write(producer, ex, parts)
    producer.commit()
    return time.perf_counter() - start, sent


def restore_snapshots(config: dict, topic: str, ex: QueryExecutor) -> None:
    """The former restore: read the whole snapshot topic, load the latest snapshot of each partition."""
    latest: dict[bytes, bytes] = {}
    with BatchConsumer(config, [topic], isolation="read_committed", track_end=True) as reader:
        while not reader.reached_end():
            batch = reader.poll_batch(100, 0.5)
            latest.update((k, v) for k, v in zip(batch.keys, batch.values, strict=True) if k and v)
    for key, value in latest.items():
        ex.restore(int(key), value)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--keys", type=int, default=1_000_000)
    parser.add_argument("--partitions", type=int, default=4)
    parser.add_argument("--touched", type=int, default=10_000, help="keys a small commit changes")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--no-write", action="store_true", help="Print only; leave docs/benchmarks.md alone.")
    args = parser.parse_args()
    parts = list(range(args.partitions))
    engine = SqlEngine()
    engine.execute("CREATE STREAM pings (host VARCHAR KEY, ms BIGINT) WITH (KAFKA_TOPIC='p', VALUE_FORMAT='JSON');")
    plan = engine.plan(QUERY)

    with bench_settings() as settings:
        config = client_config(settings)
        admin = Admin(config)
        topic = f"bench-changelog-{uuid.uuid4().hex[:8]}"
        log = Changelog(config, topic, ensure_changelog_topic(admin, topic, args.partitions))
        ex = plan.executor()
        ex.execute(*keyed_batch(np.arange(args.keys), args.partitions, 1_000))
        big = {"message.max.bytes": 64 * 1024 * 1024}  # as the query's producer
        producer = TransactionalProducer(config, f"bench-{uuid.uuid4().hex[:8]}", big)
        former = f"{topic}-snapshots"
        admin.create_topic(former, partitions=1, config=CHANGELOG_CONFIG)
        first, first_records = commit(log, producer, ex, parts)
        rng = np.random.default_rng(1)
        small, small_records, snap, snap_bytes, snap_max = [], 0, [], 0, 0
        for r in range(args.rounds):
            touched = rng.choice(args.keys, args.touched, replace=False)
            ex.execute(*keyed_batch(touched, args.partitions, 2_000 + r))
            start = time.perf_counter()
            snapshots = [ex.snapshot(p) for p in parts]  # the former commit of the same change
            producer.begin()
            producer.produce_batch(former, snapshots, [str(p).encode() for p in parts])
            producer.commit()
            snap.append(time.perf_counter() - start)
            snap_bytes, snap_max = sum(map(len, snapshots)), max(map(len, snapshots))
            seconds, small_records = commit(log, producer, ex, parts)
            small.append(seconds)
        producer.close()
        ex.close()
        restore_all, restore_one, restore_former = [], [], []
        for _ in range(args.rounds):
            with plan.executor() as fresh:
                start = time.perf_counter()
                restore_snapshots(config, former, fresh)
                restore_former.append(time.perf_counter() - start)
            with plan.executor() as fresh:
                start = time.perf_counter()
                read_all = log.restore(fresh, parts)
                restore_all.append(time.perf_counter() - start)
            with plan.executor() as fresh:
                start = time.perf_counter()
                read_one = log.restore(fresh, [0])
                restore_one.append(time.perf_counter() - start)
        admin.delete_topic(topic, if_exists=True)
        admin.delete_topic(former, if_exists=True)

    med = statistics.median
    rows = [
        ["first commit (every key new)", f"{first_records:,}", f"{first:.2f}"],
        [f"small commit ({args.touched:,} keys changed)", f"{small_records:,}", f"{med(small):.3f}"],
        [
            "same change as whole-partition snapshots (former)",
            f"{args.partitions} ({snap_bytes / 1e6:.0f} MB)",
            med(snap),
        ],
        [f"restore all {args.partitions} partitions", f"{read_all:,}", f"{med(restore_all):.2f}"],
        ["restore one partition (one worker's share)", f"{read_one:,}", f"{med(restore_one):.2f}"],
        ["restore all from whole-partition snapshots (former)", f"{args.partitions}", f"{med(restore_former):.2f}"],
    ]
    body = table(["operation", "records", "seconds"], rows) + (
        f"\n\n{args.keys:,} keys of `{QUERY}` in {args.partitions} source partitions, each commit one Kafka "
        f"transaction; median of {args.rounds}. A commit writes one record per changed key (and one with the "
        "partition's stream time), so its cost follows the change, not the state; the former commit wrote every "
        f"touched partition whole, the largest snapshot being {snap_max / 1e6:.1f} MB (a record may be 64 MB). "
        "A full restore reads one record per key (and, until compaction runs, every older one), slower than "
        "reading whole snapshots; a worker reads only its own partitions' share. Restores read only the "
        "changelog partitions of the partitions asked for. Measured on a busy shared machine (2 cores, other "
        "builds and tests running): read the ratios, not the absolute seconds."
    )
    print(body)
    if not args.no_write:
        write_section(
            "state-changelog",
            "Stateful queries: changelog commit cost and restore time",
            body,
            f"python -m benchmarks.state_changelog --keys {args.keys} --partitions {args.partitions} "
            f"--rounds {args.rounds}",
        )


if __name__ == "__main__":
    main()
