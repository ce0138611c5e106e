"""Model lifecycle events on the compacted control topic ``_streamml_models``.

Every alias move (promote, rollback, removal) and every deletion is published with the event's key
(``model@alias`` or ``model:version``) as the record key and its JSON as the value, so compaction keeps the
latest event per alias. :func:`latest_events` reads the topic from the beginning to learn the current
versions; a scoring worker's :class:`ControlFollower` follows it from its end and hands each promotion to the
model provider, which switches at the next batch boundary. Both read it through the one reader of compacted
topics (:mod:`streamml.kafka.compacted`); publishing creates the topic (:mod:`streamml.runtime.topics`).

    >>> publish_events(settings, [registry.promote("fraud", 3)])            # doctest: +SKIP
    >>> latest_events(settings)["fraud@production"].version                 # doctest: +SKIP
    3
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable, Mapping
from typing import Literal

from streamml.config import Settings
from streamml.errors import ModelError
from streamml.kafka import Admin, Producer, client_config
from streamml.kafka.compacted import CompactedReader
from streamml.kafka.consumer import RecordBatch
from streamml.models.events import ModelEvent
from streamml.runtime.topics import MODELS_TOPIC, ensure_control_topic

log = logging.getLogger(__name__)

#: how long :meth:`ControlFollower.start` waits for the follower to stand at the end of the topic
READY_TIMEOUT_S = 30.0


def publish_events(settings: Settings, events: Iterable[ModelEvent], topic: str = MODELS_TOPIC) -> int:
    """Publish ``events`` in order and wait until they are stored; returns how many were sent."""
    batch = list(events)
    if not batch:
        return 0
    config = client_config(settings)
    ensure_control_topic(Admin(config, timeout_s=settings.request_timeout_s), topic)
    with Producer(config) as producer:
        producer.produce_batch(topic, [e.to_json().encode() for e in batch], [e.key.encode() for e in batch])
    log.info("published %d model event(s) to %s", len(batch), topic)
    return len(batch)


class ControlReader:
    """Follows the control topic: :meth:`poll` returns new events, :attr:`latest` the newest per key.

    Records that are not valid events are logged and skipped (a bad record never stops a worker). A missing
    topic reads as empty (nothing was published yet); the reader picks it up once it is created.
    """

    def __init__(self, settings: Settings, topic: str = MODELS_TOPIC, *, start: str = "earliest") -> None:
        self.topic = topic
        self.latest: dict[str, ModelEvent] = {}
        position: Literal["earliest", "latest"] = "latest" if start == "latest" else "earliest"
        config = client_config(settings)
        self._reader = CompactedReader(config, topic, start=position, keep_latest=False, missing_ok=True)

    def poll(self, timeout_s: float = 0.0, max_records: int = 1000) -> list[ModelEvent]:
        """Events that arrived since the last call, oldest first (waits up to ``timeout_s`` for the first)."""
        return self._accept(self._reader.poll(timeout_s, max_records))

    def catch_up(self, timeout_s: float = 30.0) -> dict[str, ModelEvent]:
        """Read everything stored so far; returns :attr:`latest`."""
        for batch in self._reader.batches_to_end(timeout_s):
            self._accept(batch)
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
        self._reader.close()

    def __enter__(self) -> ControlReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class ControlFollower:
    """Follows the control topic in a background thread from its end and hands each new event to ``on_event``.

    :meth:`start` returns once the follower stands at the end of the topic, so every event published after
    it returns is handed on.
    """

    def __init__(self, settings: Settings, on_event: Callable[[ModelEvent], None], topic: str = MODELS_TOPIC) -> None:
        self.settings = settings
        self.topic = topic
        self.on_event = on_event
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="model-control", daemon=True)
        self._ready = threading.Event()

    def start(self) -> ControlFollower:
        self._thread.start()
        self._ready.wait(READY_TIMEOUT_S)
        return self

    def _run(self) -> None:
        with ControlReader(self.settings, self.topic, start="latest") as reader:
            try:
                reader.catch_up(READY_TIMEOUT_S)
            except Exception:
                log.exception("could not reach the end of the control topic %s; following it anyway", self.topic)
            finally:
                self._ready.set()
            while not self._stop.is_set():
                try:
                    events = reader.poll(0.2, 100)
                except Exception:
                    log.exception("could not read the control topic %s", self.topic)
                    self._stop.wait(1.0)
                    continue
                for event in events:
                    try:
                        self.on_event(event)
                    except Exception:
                        log.exception("could not apply a model event")

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(10)


def follow_control(
    settings: Settings, on_event: Callable[[ModelEvent], None], topic: str = MODELS_TOPIC
) -> ControlFollower:
    """Create the control topic if it is missing and follow it (see :class:`ControlFollower`), started."""
    ensure_control_topic(Admin(client_config(settings), timeout_s=settings.request_timeout_s), topic)
    return ControlFollower(settings, on_event, topic).start()


def latest_events(settings: Settings, topic: str = MODELS_TOPIC, timeout_s: float = 30.0) -> dict[str, ModelEvent]:
    """The newest event per key (``model@alias`` / ``model:version``) stored in the control topic."""
    with ControlReader(settings, topic) as reader:
        return reader.catch_up(timeout_s)


def current_versions(events: Mapping[str, ModelEvent]) -> dict[str, int]:
    """``model@alias`` -> version for every alias that currently points at a version."""
    return {key: e.version for key, e in events.items() if e.alias is not None and e.version is not None}
