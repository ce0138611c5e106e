"""Model lifecycle events on the compacted control topic ``_streamml_models``.

Every alias move (promote, rollback, removal) and every deletion is published with the event's key
(``model@alias`` or ``model:version``) as the record key and its JSON as the value, so compaction keeps the
latest event per alias. Scoring workers read the topic from the beginning to learn the current versions,
then keep polling it and switch models at their next batch boundary.

    >>> publish_events(settings, [registry.promote("fraud", 3)])            # doctest: +SKIP
    >>> latest_events(settings)["fraud@production"].version                 # doctest: +SKIP
    3
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Mapping
from typing import Any

from streamml.config import Settings
from streamml.errors import ModelError
from streamml.kafka import Admin, BatchConsumer, Producer, client_config
from streamml.kafka.consumer import RecordBatch
from streamml.models.events import ModelEvent
from streamml.runtime.naming import MODELS_TOPIC

log = logging.getLogger(__name__)

CONTROL_TOPIC_CONFIG = {"cleanup.policy": "compact", "min.cleanable.dirty.ratio": "0.1", "segment.ms": "600000"}


def ensure_control_topic(config: Mapping[str, Any], topic: str = MODELS_TOPIC, timeout_s: float = 10.0) -> None:
    """Create the compacted control topic (one partition, so every reader sees one total order) if missing."""
    Admin(config, timeout_s=timeout_s).create_topic(
        topic, partitions=1, config=CONTROL_TOPIC_CONFIG, if_not_exists=True
    )


def publish_events(settings: Settings, events: Iterable[ModelEvent], topic: str = MODELS_TOPIC) -> int:
    """Publish ``events`` in order and wait until they are stored; returns how many were sent."""
    batch = list(events)
    if not batch:
        return 0
    config = client_config(settings)
    ensure_control_topic(config, topic, settings.request_timeout_s)
    with Producer(config) as producer:
        producer.produce_batch(topic, [e.to_json().encode() for e in batch], [e.key.encode() for e in batch])
    log.info("published %d model event(s) to %s", len(batch), topic)
    return len(batch)


class ControlReader:
    """Follows the control topic: :meth:`poll` returns new events, :attr:`latest` the newest per key.

    Records that are not valid events are logged and skipped (a bad record never stops a worker).
    """

    def __init__(self, settings: Settings, topic: str = MODELS_TOPIC, *, start: str = "earliest") -> None:
        config = client_config(settings)
        ensure_control_topic(config, topic, settings.request_timeout_s)
        self.topic = topic
        self.latest: dict[str, ModelEvent] = {}
        self._consumer = BatchConsumer(config, [topic], start="latest" if start == "latest" else "earliest",
                                       track_end=True)  # fmt: skip

    def poll(self, timeout_s: float = 0.0, max_records: int = 1000) -> list[ModelEvent]:
        """Events that arrived since the last call, oldest first (waits up to ``timeout_s`` for the first)."""
        return self._accept(self._consumer.poll_batch(max_records, timeout_s))

    def catch_up(self, timeout_s: float = 30.0) -> dict[str, ModelEvent]:
        """Read everything stored so far; returns :attr:`latest`."""
        deadline = time.monotonic() + timeout_s
        while not self._consumer.reached_end():
            if time.monotonic() > deadline:
                raise ModelError(f"timed out reading the control topic '{self.topic}'", hint="is Kafka reachable?")
            self.poll(0.2)
        return dict(self.latest)

    def _accept(self, batch: RecordBatch) -> list[ModelEvent]:
        events = []
        for key, value in zip(batch.keys, batch.values, strict=True):
            if value is None:  # a tombstone: the key was retired
                self.latest.pop((key or b"").decode(errors="replace"), None)
                continue
            try:
                event = ModelEvent.from_json(value)
            except ModelError as exc:
                log.warning("skipping a record of %s that is not a model event: %s", self.topic, exc)
                continue
            self.latest[event.key] = event
            events.append(event)
        return events

    def close(self) -> None:
        self._consumer.close()

    def __enter__(self) -> ControlReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def latest_events(settings: Settings, topic: str = MODELS_TOPIC, timeout_s: float = 30.0) -> dict[str, ModelEvent]:
    """The newest event per key (``model@alias`` / ``model:version``) stored in the control topic."""
    with ControlReader(settings, topic) as reader:
        return reader.catch_up(timeout_s)


def current_versions(events: Mapping[str, ModelEvent]) -> dict[str, int]:
    """``model@alias`` -> version for every alias that currently points at a version."""
    return {key: e.version for key, e in events.items() if e.alias is not None and e.version is not None}
