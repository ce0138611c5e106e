from __future__ import annotations

import time
from collections.abc import Callable

import pytest

from streamml.errors import TopicNotFoundError
from streamml.kafka import Admin, BatchConsumer, Producer, StartAt, TransactionalProducer

pytestmark = pytest.mark.broker
T0 = 1_700_000_000_000


def read_all(consumer: BatchConsumer, expected: int, timeout_s: float = 30.0) -> list[tuple[bytes | None, ...]]:
    rows: list[tuple[bytes | None, ...]] = []
    deadline = time.monotonic() + timeout_s
    while len(rows) < expected and time.monotonic() < deadline:
        batch = consumer.poll_batch(10_000, 0.5)
        rows.extend(zip(batch.keys, batch.values, strict=True))
    return rows


def test_batch_round_trip_with_keys_headers_timestamps(kafka_config: dict, topic: Callable[..., str]) -> None:
    name = topic(partitions=3)
    values = [f"v{i}".encode() for i in range(3000)]
    keys = [f"k{i % 17}".encode() for i in range(3000)]
    with Producer(kafka_config) as producer:
        producer.produce_batch(name, values, keys, timestamps=[1_700_000_000_000 + i for i in range(3000)])
        producer.produce_batch(name, [b"h"], [b"hk"], headers=[("source", b"test")])
    with BatchConsumer(kafka_config, [name]) as consumer:
        seen: dict[bytes, bytes] = {}
        headers: list[object] = []
        deadline = time.monotonic() + 30
        while len(seen) < 3001 and time.monotonic() < deadline:
            batch = consumer.poll_batch(2000, 0.5)
            seen.update(zip(batch.values, batch.keys, strict=True))  # type: ignore[arg-type]
            headers.extend(h for h in batch.headers if h)
            assert len(batch.partitions) == len(batch.offsets) == len(batch.timestamps) == len(batch)
    assert len(seen) == 3001
    assert all(seen[v] == k for v, k in zip(values, keys, strict=True))
    assert headers == [[("source", b"test")]]


def test_same_key_same_partition_in_order(kafka_config: dict, topic: Callable[..., str]) -> None:
    name = topic(partitions=4)
    with Producer(kafka_config) as producer:
        producer.produce_batch(name, [str(i).encode() for i in range(400)], [b"abc"] * 400)
    with BatchConsumer(kafka_config, [name]) as consumer:
        batches = []
        while sum(map(len, batches)) < 400:
            batches.append(consumer.poll_batch(1000, 0.5))
    parts = {int(p) for b in batches for p in b.partitions}
    order = [int(v) for b in batches for v in b.values]  # type: ignore[arg-type]
    assert len(parts) == 1
    assert order == list(range(400))


def test_start_at_offset_and_timestamp(kafka_config: dict, topic: Callable[..., str]) -> None:
    name = topic()
    with Producer(kafka_config) as producer:
        producer.produce_batch(
            name, [str(i).encode() for i in range(10)], timestamps=[T0 + 1000 * i for i in range(10)]
        )
    with BatchConsumer(kafka_config, [name], start=7) as consumer:
        assert [v for _, v in read_all(consumer, 3)] == [b"7", b"8", b"9"]
    with BatchConsumer(kafka_config, [name], start=StartAt(timestamp_ms=T0 + 4500)) as consumer:
        assert [v for _, v in read_all(consumer, 5)] == [b"5", b"6", b"7", b"8", b"9"]
    with BatchConsumer(kafka_config, [name]) as consumer:
        read_all(consumer, 10)
        consumer.seek(name, 0, 2)
        assert read_all(consumer, 8)[0][1] == b"2"


def test_end_of_topic_is_detected(kafka_config: dict, topic: Callable[..., str]) -> None:
    name = topic(partitions=2)
    with Producer(kafka_config) as producer:
        producer.produce_batch(name, [b"a", b"b", b"c"])
    with BatchConsumer(kafka_config, [name], track_end=True) as consumer:
        got = 0
        deadline = time.monotonic() + 20
        while not consumer.reached_end() and time.monotonic() < deadline:
            got += len(consumer.poll_batch(100, 0.3))
        assert consumer.reached_end()
        ends = dict(consumer.end_offsets)
    assert got == 3
    # each end-of-partition event carries the offset the partition ended at, so a reader can tell an end
    # that is below the one it planned for (records not visible yet) from the real end
    assert set(ends) == {(name, 0), (name, 1)} and sum(ends.values()) == 3


def test_consume_unknown_topic(kafka_config: dict, unique: Callable[[str], str]) -> None:
    with pytest.raises(TopicNotFoundError):
        BatchConsumer(kafka_config, [unique("nope")])


def test_group_commit_resumes_where_it_left_off(
    kafka_config: dict, topic: Callable[..., str], unique: Callable[[str], str]
) -> None:
    name, group = topic(), unique("g")
    with Producer(kafka_config) as producer:
        producer.produce_batch(name, [str(i).encode() for i in range(100)])
    with BatchConsumer(kafka_config, [name], group_id=group) as consumer:
        first = read_all(consumer, 100)
        consumer.commit({(name, 0): 60})
    with BatchConsumer(kafka_config, [name], group_id=group) as consumer:
        rest = read_all(consumer, 40)
    assert len(first) == 100
    assert [v for _, v in rest] == [str(i).encode() for i in range(60, 100)]


def test_rebalance_across_two_consumers(
    kafka_config: dict, topic: Callable[..., str], unique: Callable[[str], str]
) -> None:
    name, group = topic(partitions=4), unique("g")
    producer = Producer(kafka_config)
    producer.produce_batch(name, [str(i).encode() for i in range(1000)], [str(i).encode() for i in range(1000)])
    producer.flush()
    a = BatchConsumer(kafka_config, [name], group_id=group)
    seen: dict[str, list[bytes]] = {"a": [], "b": []}

    def poll(consumer: BatchConsumer, who: str) -> None:
        batch = consumer.poll_batch(200, 0.2)
        seen[who].extend(batch.values)  # type: ignore[arg-type]
        if len(batch):
            consumer.commit(batch.next_offsets())

    try:
        deadline = time.monotonic() + 30
        while len(seen["a"]) < 1000 and time.monotonic() < deadline:
            poll(a, "a")
        assert len(a.assignment()) == 4  # alone, it owns every partition
        b = BatchConsumer(kafka_config, [name], group_id=group)
        try:
            while not (a.assignment() and b.assignment()) and time.monotonic() < deadline:
                poll(a, "a")
                poll(b, "b")
            producer.produce_batch(
                name, [str(i).encode() for i in range(1000, 2000)], [str(i).encode() for i in range(1000, 2000)]
            )
            producer.flush()
            while len(set(seen["a"]) | set(seen["b"])) < 2000 and time.monotonic() < deadline:
                poll(a, "a")
                poll(b, "b")
            parts_a, parts_b = set(a.assignment()), set(b.assignment())
        finally:
            b.close()
    finally:
        a.close()
    assert set(seen["a"]) | set(seen["b"]) == {str(i).encode() for i in range(2000)}
    assert parts_a and parts_b and not parts_a & parts_b
    assert len(parts_a | parts_b) == 4
    assert seen["b"], "the second member never received records"


def test_aborted_transaction_is_invisible_to_read_committed(
    kafka_config: dict, topic: Callable[..., str], unique: Callable[[str], str]
) -> None:
    name = topic()
    producer = TransactionalProducer(kafka_config, unique("tx"))
    with producer.transaction():
        producer.produce_batch(name, [b"committed-1", b"committed-2"])
    with pytest.raises(RuntimeError), producer.transaction():
        producer.produce_batch(name, [b"aborted-1", b"aborted-2"])
        producer.flush()
        raise RuntimeError("fail inside the transaction")
    with producer.transaction():
        producer.produce_batch(name, [b"committed-3"])
    producer.close()

    with BatchConsumer(kafka_config, [name], isolation="read_committed", track_end=True) as committed:
        values = [v for _, v in read_all(committed, 3)]
        time.sleep(0.5)
        values += committed.poll_batch(100, 0.5).values  # nothing more may arrive
    assert values == [b"committed-1", b"committed-2", b"committed-3"]
    with BatchConsumer(kafka_config, [name], isolation="read_uncommitted") as raw:
        assert b"aborted-1" in [v for _, v in read_all(raw, 5)]


def test_offsets_commit_with_the_transaction(
    kafka_config: dict, topic: Callable[..., str], unique: Callable[[str], str], admin: Admin
) -> None:
    source, sink, group = topic(), topic(), unique("g")
    with Producer(kafka_config) as producer:
        producer.produce_batch(source, [str(i).encode() for i in range(50)])
    consumer = BatchConsumer(kafka_config, [source], group_id=group)
    producer = TransactionalProducer(kafka_config, unique("tx"))
    moved = 0
    deadline = time.monotonic() + 30
    while moved < 50 and time.monotonic() < deadline:
        batch = consumer.poll_batch(20, 0.5)
        if not len(batch):
            continue
        with producer.transaction(consumer, batch.next_offsets()):
            producer.produce_batch(sink, [v + b"!" for v in batch.values])  # type: ignore[operator]
        moved += len(batch)
    consumer.close()
    producer.close()
    assert admin.watermarks(sink)[0][1] > 50  # 50 records plus commit markers
    again = BatchConsumer(kafka_config, [source], group_id=group)
    try:
        assert len(again.poll_batch(100, 2.0)) == 0  # every offset was committed by the transactions
    finally:
        again.close()


def test_compacted_topic_keeps_latest_value_per_key(
    kafka_config: dict, topic: Callable[..., str], admin: Admin
) -> None:
    config = {"cleanup.policy": "compact", "segment.ms": "100", "min.cleanable.dirty.ratio": "0.001",
              "delete.retention.ms": "100", "min.compaction.lag.ms": "0"}  # fmt: skip
    name = topic(config=config)
    with Producer(kafka_config) as producer:
        for round_ in range(5):
            producer.produce_batch(
                name, [f"{k}:{round_}".encode() for k in range(20)], [str(k).encode() for k in range(20)]
            )
            producer.flush()
            time.sleep(0.3)
    deadline = time.monotonic() + 60
    latest: dict[bytes | None, bytes | None] = {}
    total = 100
    while time.monotonic() < deadline:
        with BatchConsumer(kafka_config, [name], track_end=True) as consumer:
            rows: list[tuple[bytes | None, ...]] = []
            while not consumer.reached_end():
                batch = consumer.poll_batch(1000, 0.3)
                rows.extend(zip(batch.keys, batch.values, strict=True))
        latest = dict(rows)  # type: ignore[arg-type]
        total = len(rows)
        if total < 100:
            break
        with Producer(kafka_config) as producer:  # a new segment lets the cleaner take the old ones
            producer.produce_batch(name, [b"20:0"], [b"20"])
        time.sleep(1.0)
    assert total < 100, "the log cleaner never compacted the topic"
    assert all(latest[str(k).encode()] == f"{k}:4".encode() for k in range(20))
