"""Faults injected at the transactional calls of a real producer: the state it keeps must stay true."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from confluent_kafka import KafkaError as CKafkaError
from confluent_kafka import KafkaException

from streamml.errors import KafkaError
from streamml.kafka import BatchConsumer, TransactionalProducer

pytestmark = pytest.mark.broker


class _FailingCommit:
    """The real client, except that its next ``commit_transaction`` fails with a retriable error."""

    def __init__(self, real: Any) -> None:
        self._real = real
        self.failures_left = 1

    def commit_transaction(self, *args: Any) -> None:
        if self.failures_left:
            self.failures_left -= 1
            raise KafkaException(CKafkaError(CKafkaError._TIMED_OUT, "injected commit timeout", retriable=True))
        self._real.commit_transaction(*args)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._real, name)


def test_abort_after_a_retriable_commit_failure_really_aborts(
    kafka_config: dict, topic: Callable[..., str], unique: Callable[[str], str]
) -> None:
    name = topic()
    producer = TransactionalProducer(kafka_config, unique("txn"))
    producer._producer = _FailingCommit(producer._producer)  # type: ignore[assignment]
    producer.begin()
    producer.produce_batch(name, [b"aborted"])
    with pytest.raises(KafkaError):
        producer.commit()
    assert producer.in_transaction  # a retriable failure leaves the transaction open
    producer.abort()
    assert not producer.in_transaction
    producer.begin()  # fails with 'transaction already in progress' when the abort did nothing
    producer.produce_batch(name, [b"committed"])
    producer.commit()
    producer.close()
    with BatchConsumer(kafka_config, [name], isolation="read_committed", track_end=True) as reader:
        values: list[bytes | None] = []
        while not reader.reached_end():
            values.extend(reader.poll_batch(100, 0.5).values)
    assert values == [b"committed"]


def test_stalled_names_a_call_past_its_deadline(kafka_config: dict, unique: Callable[[str], str]) -> None:
    producer = TransactionalProducer(kafka_config, unique("txn"), call_timeout_s=0.0)
    assert producer.stalled(grace_s=0.0) is None
    with producer._call("send_offsets_to_transaction", -10.0):
        assert "send_offsets_to_transaction" in (producer.stalled(grace_s=1.0) or "")
    assert producer.stalled(grace_s=0.0) is None
    producer.close()
