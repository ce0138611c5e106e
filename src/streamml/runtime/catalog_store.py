"""The SQL catalog kept in a compacted Kafka topic, so every runner and machine sees the same streams.

One record under the key ``catalog`` holds the catalog JSON, the persistent queries (id -> statement) and
the session properties; compaction keeps only the latest. Writers read-modify-write; the last one wins.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import orjson

from streamml.config import Settings
from streamml.errors import SqlError
from streamml.kafka import Admin, BatchConsumer, Producer, client_config
from streamml.sql import Catalog, SqlEngine

_KEY = b"catalog"
_TOPIC_CONFIG = {"cleanup.policy": "compact", "min.cleanable.dirty.ratio": "0.1", "segment.ms": "600000"}


@dataclass
class CatalogState:
    """What the catalog topic stores."""

    catalog: Catalog = field(default_factory=Catalog)
    queries: dict[str, str] = field(default_factory=dict)
    properties: dict[str, str] = field(default_factory=dict)

    def to_json(self) -> bytes:
        return orjson.dumps(
            {"catalog": orjson.loads(self.catalog.to_json()), "queries": self.queries, "properties": self.properties}
        )

    @staticmethod
    def from_json(data: bytes) -> CatalogState:
        raw: dict[str, Any] = orjson.loads(data)
        return CatalogState(
            catalog=Catalog.from_json(orjson.dumps(raw.get("catalog", {}))),
            queries=dict(raw.get("queries", {})),
            properties=dict(raw.get("properties", {})),
        )


class CatalogStore:
    """Loads and saves :class:`CatalogState` in the catalog topic (``Settings.catalog_topic``)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.topic = settings.catalog_topic
        self.config = client_config(settings)
        Admin(self.config, timeout_s=settings.request_timeout_s).create_topic(
            self.topic, partitions=1, config=_TOPIC_CONFIG, if_not_exists=True
        )

    def load(self, timeout_s: float = 30.0) -> CatalogState:
        """The latest stored state (an empty one when nothing was stored yet)."""
        latest: bytes | None = None
        with BatchConsumer(self.config, [self.topic], track_end=True) as reader:
            deadline = time.monotonic() + timeout_s
            while not reader.reached_end() and time.monotonic() < deadline:
                batch = reader.poll_batch(1000, 0.2)
                for key, value in zip(batch.keys, batch.values, strict=True):
                    if key == _KEY and value is not None:
                        latest = value
        return CatalogState.from_json(latest) if latest else CatalogState()

    def save(self, state: CatalogState) -> None:
        with Producer(self.config) as producer:
            producer.produce_batch(self.topic, [state.to_json()], [_KEY])


def engine_from_state(state: CatalogState, engine: SqlEngine | None = None) -> SqlEngine:
    """A SQL engine holding ``state``'s catalog, with each stored persistent query planned again."""
    engine = engine or SqlEngine.with_plugins()
    engine.catalog = state.catalog
    engine.properties = dict(state.properties)
    engine.queries = {}
    for query_id, statement in state.queries.items():
        try:
            engine.queries[query_id] = engine.plan(statement)
        except SqlError as exc:
            raise SqlError(f"stored query {query_id} no longer plans: {exc.message}", hint=exc.hint) from None
    return engine
