"""The one reader of compacted topics: catch up to the end (tombstones delete keys), then follow; a topic it
cannot read raises a clear error by its deadline instead of reading as empty or hanging."""

from __future__ import annotations

import socket
import time
from collections.abc import Callable

import pytest

from streamml.errors import KafkaError, TopicNotFoundError
from streamml.kafka import Admin, Producer
from streamml.kafka.compacted import CompactedReader

COMPACT = {"cleanup.policy": "compact"}


def send(config: dict, topic: str, records: list[tuple[bytes, bytes | None]], partition: int | None = None) -> None:
    with Producer(config) as producer:
        parts = None if partition is None else [partition] * len(records)
        producer.produce_batch(topic, [v for _, v in records], [k for k, _ in records], partitions=parts)


def poll_until(reader: CompactedReader, done: Callable[[], bool], timeout_s: float = 30.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while not done() and time.monotonic() < deadline:
        reader.poll(0.2)
    return done()


@pytest.mark.broker
def test_catches_up_with_tombstones_then_follows(kafka_config: dict, topic: Callable[..., str]) -> None:
    name = topic(partitions=2, config=COMPACT)
    send(kafka_config, name, [(b"a", b"1"), (b"b", b"1"), (b"a", b"2")], partition=0)
    send(kafka_config, name, [(b"c", b"1"), (b"b", None)], partition=1)  # b's tombstone on another partition
    send(kafka_config, name, [(b"b", None)], partition=0)
    with CompactedReader(kafka_config, name) as reader:
        assert reader.catch_up(timeout_s=30) == {b"a": b"2", b"c": b"1"}
        send(kafka_config, name, [(b"d", b"1"), (b"a", None)], partition=0)
        send(kafka_config, name, [(b"c", b"2")], partition=1)
        assert poll_until(reader, lambda: reader.latest == {b"c": b"2", b"d": b"1"}), reader.latest


@pytest.mark.broker
def test_from_the_end_it_hands_out_only_new_records(kafka_config: dict, topic: Callable[..., str]) -> None:
    name = topic(config=COMPACT)
    send(kafka_config, name, [(b"old", b"1")])
    with CompactedReader(kafka_config, name, start="latest") as reader:
        assert reader.catch_up(timeout_s=30) == {}
        send(kafka_config, name, [(b"new", b"1")])
        seen: list[bytes | None] = []
        assert poll_until(reader, lambda: bool(seen.extend(reader.poll(0.2).keys) or seen)), "nothing followed"
        assert seen == [b"new"]


@pytest.mark.broker
def test_a_missing_topic_reads_as_empty_when_allowed_and_is_followed_once_created(
    kafka_config: dict, admin: Admin, unique: Callable[[str], str]
) -> None:
    name = unique("later")
    with pytest.raises(TopicNotFoundError, match=name):
        CompactedReader(kafka_config, name).catch_up(timeout_s=10)
    with CompactedReader(kafka_config, name, missing_ok=True) as reader:
        assert reader.catch_up(timeout_s=10) == {} and not reader.opened
        admin.create_topic(name, config=COMPACT)
        send(kafka_config, name, [(b"k", b"v")])
        assert poll_until(reader, lambda: reader.latest == {b"k": b"v"}), reader.latest


def test_an_unreachable_cluster_is_a_clear_error_by_the_deadline() -> None:
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    config = {"bootstrap.servers": f"127.0.0.1:{port}", "socket.connection.setup.timeout.ms": 1000}
    reader = CompactedReader(config, "_svc_catalog")  # constructing it does not connect
    assert not reader.opened
    with pytest.raises(KafkaError, match="cannot read topic '_svc_catalog'"):
        reader.catch_up(timeout_s=1)
