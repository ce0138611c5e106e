"""Topic administration: create, list, describe, delete, with configs such as ``cleanup.policy=compact``."""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from confluent_kafka import Consumer, KafkaException, TopicPartition
from confluent_kafka.admin import AdminClient, ConfigResource, NewTopic

from streamml.errors import KafkaError, TopicNotFoundError
from streamml.kafka.cluster import translate

# NOT_LEADER_FOR_PARTITION, LEADER_NOT_AVAILABLE, UNKNOWN_TOPIC_OR_PART right after creation
_SETTLING = {6, 5, 3}


@dataclass(frozen=True)
class PartitionInfo:
    """One partition: leader, replicas, in-sync replicas and the offsets it holds."""

    id: int
    leader: int
    replicas: list[int]
    isr: list[int]
    low: int = 0
    high: int = 0


@dataclass(frozen=True)
class TopicInfo:
    """A topic's partitions and (non-default) configuration."""

    name: str
    partitions: list[PartitionInfo]
    config: dict[str, str] = field(default_factory=dict)

    @property
    def replication(self) -> int:
        return len(self.partitions[0].replicas) if self.partitions else 0

    @property
    def messages(self) -> int:
        return sum(p.high - p.low for p in self.partitions)


class Admin:
    """Thin wrapper over ``AdminClient`` that raises streamml errors and waits for results."""

    def __init__(self, config: Mapping[str, Any], timeout_s: float = 10.0) -> None:
        self._config = dict(config)
        self._client = AdminClient(self._config)
        self.timeout_s = timeout_s
        self.bootstrap = str(self._config.get("bootstrap.servers"))

    def _metadata(self, topic: str | None = None) -> Any:
        try:
            return self._client.list_topics(topic=topic, timeout=self.timeout_s)
        except KafkaException as exc:
            raise translate(exc, "reading cluster metadata", self.bootstrap) from None

    def topic_names(self, include_internal: bool = False) -> list[str]:
        """Names of the topics, sorted; internal ones (``__consumer_offsets``, ...) only when asked."""
        names = self._metadata().topics
        return sorted(n for n in names if include_internal or not n.startswith("__"))

    def exists(self, name: str) -> bool:
        return name in self._metadata().topics

    def create_topic(
        self,
        name: str,
        partitions: int = 1,
        replication: int = 1,
        config: Mapping[str, str] | None = None,
        if_not_exists: bool = False,
    ) -> bool:
        """Create a topic; returns False when it existed and ``if_not_exists`` is set."""
        new = NewTopic(name, num_partitions=partitions, replication_factor=replication, config=dict(config or {}))
        future = self._client.create_topics([new], operation_timeout=self.timeout_s)[name]
        try:
            future.result(timeout=self.timeout_s)
        except KafkaException as exc:
            if exc.args and exc.args[0].name() == "TOPIC_ALREADY_EXISTS":
                if if_not_exists:
                    return False
                raise KafkaError(f"topic '{name}' already exists") from None
            raise translate(exc, f"creating topic '{name}'", self.bootstrap) from None
        self._wait_for(name, present=True)
        return True

    def delete_topic(self, name: str, if_exists: bool = False) -> bool:
        """Delete a topic; returns False when it did not exist and ``if_exists`` is set."""
        future = self._client.delete_topics([name], operation_timeout=self.timeout_s)[name]
        try:
            future.result(timeout=self.timeout_s)
        except KafkaException as exc:
            if exc.args and exc.args[0].name() == "UNKNOWN_TOPIC_OR_PART":
                if if_exists:
                    return False
                raise TopicNotFoundError(name) from None
            raise translate(exc, f"deleting topic '{name}'", self.bootstrap) from None
        self._wait_for(name, present=False)
        return True

    def _wait_for(self, name: str, present: bool) -> None:
        """Wait until metadata shows the topic with a leader for every partition (or gone)."""
        deadline = time.monotonic() + self.timeout_s
        while time.monotonic() < deadline:
            topic = self._metadata(name).topics.get(name)
            ok = (
                topic is not None
                and topic.error is None
                and topic.partitions
                and all(p.leader >= 0 for p in topic.partitions.values())
            )
            if bool(ok) == present:
                return
            time.sleep(0.05)

    def describe_topic(self, name: str, with_offsets: bool = True) -> TopicInfo:
        """Partitions (leader, replicas, ISR, offsets) and non-default configs of ``name``."""
        meta = self._metadata(name).topics.get(name)
        if meta is None or meta.error is not None:
            raise TopicNotFoundError(name)
        offsets: dict[int, tuple[int, int]] = {}
        if with_offsets:
            offsets = self.watermarks(name, list(meta.partitions))
        partitions = [
            PartitionInfo(
                id=p.id, leader=p.leader, replicas=list(p.replicas), isr=list(p.isrs),
                low=offsets.get(p.id, (0, 0))[0], high=offsets.get(p.id, (0, 0))[1],
            )
            for p in sorted(meta.partitions.values(), key=lambda p: p.id)
        ]  # fmt: skip
        return TopicInfo(name=name, partitions=partitions, config=self.topic_config(name))

    def topic_config(self, name: str, include_defaults: bool = False) -> dict[str, str]:
        resource = ConfigResource(ConfigResource.Type.TOPIC, name)
        try:
            entries = self._client.describe_configs([resource])[resource].result(timeout=self.timeout_s)
        except KafkaException as exc:
            raise translate(exc, f"describing topic '{name}'", self.bootstrap) from None
        return {k: str(v.value) for k, v in sorted(entries.items()) if include_defaults or not v.is_default}

    def watermarks(self, name: str, partitions: list[int] | None = None) -> dict[int, tuple[int, int]]:
        """Low and high offset per partition of ``name``."""
        if partitions is None:
            meta = self._metadata(name).topics.get(name)
            if meta is None or meta.error is not None:
                raise TopicNotFoundError(name)
            partitions = list(meta.partitions)
        consumer = Consumer({**_plain(self._config), "group.id": "streamml-admin", "enable.auto.commit": False})
        deadline = time.monotonic() + self.timeout_s
        try:
            out: dict[int, tuple[int, int]] = {}
            for p in partitions:
                while True:
                    try:
                        tp = TopicPartition(name, p)
                        low, high = consumer.get_watermark_offsets(tp, timeout=self.timeout_s, cached=False)
                        if 0 <= low <= high:
                            out[p] = (low, high)
                            break
                        # a logical offset (-1, -1001) instead of a real one: the partition is not settled
                        if time.monotonic() > deadline:
                            raise KafkaError(
                                f"reading offsets of '{name}': partition {p} answered ({low}, {high})",
                                hint="retry when the topic's partitions have leaders",
                            )
                        time.sleep(0.1)
                    except KafkaException as exc:  # a new partition's leader may still be settling
                        settling = exc.args[0].retriable() or exc.args[0].code() in _SETTLING
                        if not settling or time.monotonic() > deadline:
                            raise translate(exc, f"reading offsets of '{name}'", self.bootstrap) from None
                        time.sleep(0.1)
            return out
        finally:
            consumer.close()


def _plain(config: Mapping[str, Any]) -> dict[str, Any]:
    """Client properties valid for every client type (drops admin-only keys)."""
    return {k: v for k, v in config.items() if k not in {"operation.timeout.ms"}}
