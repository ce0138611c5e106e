"""The SQL catalog kept in a compacted Kafka topic, so every runner and machine sees the same streams.

One record under the key ``catalog`` holds the catalog JSON, the persistent queries (id -> statement) and
the session properties; compaction keeps only the latest. Writers read-modify-write; the last one wins.

Every reader plans the stored queries with the functions the runner has (``PREDICT`` over the registry, see
:func:`catalog_engine`). A stored query that no longer plans (its model was deleted, a plug-in was removed) is
kept in the catalog, logged as a warning and listed by ``SHOW QUERIES``; it never stops an unrelated command.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import orjson

from streamml.config import Settings
from streamml.errors import StreamMLError
from streamml.kafka import Admin, Producer, client_config
from streamml.kafka.compacted import CompactedReader
from streamml.runtime.topics import ensure_catalog_topic
from streamml.sql import Catalog, SqlEngine

log = logging.getLogger(__name__)

_KEY = b"catalog"


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
    """Loads and saves :class:`CatalogState` in the catalog topic (``Settings.catalog_topic``).

    A missing topic reads as an empty catalog; the first :meth:`save` creates it.
    """

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.topic = settings.catalog_topic
        self.config = client_config(settings)
        self._ensured = False

    def ensure_topic(self) -> None:
        """Create the catalog topic if it is missing (once per store)."""
        if not self._ensured:
            ensure_catalog_topic(Admin(self.config, timeout_s=self.settings.request_timeout_s), self.settings)
            self._ensured = True

    def load(self, timeout_s: float = 30.0) -> CatalogState:
        """The latest stored state (an empty one when nothing was stored yet)."""
        with self.follow() as follower:
            return follower.state(timeout_s)

    def follow(self) -> CatalogFollower:
        """A reader that stays at the end of the catalog topic, so later looks cost one local poll."""
        return CatalogFollower(self)

    def save(self, state: CatalogState) -> None:
        self.ensure_topic()
        with Producer(self.config) as producer:
            producer.produce_batch(self.topic, [state.to_json()], [_KEY])


class CatalogFollower:
    """Follows the catalog topic; :meth:`changed` says whether a newer state was stored since the last look."""

    def __init__(self, store: CatalogStore) -> None:
        self._reader = CompactedReader(store.config, store.topic, missing_ok=True)
        self._latest: bytes | None = None
        self._seen: bytes | None = None

    def _read(self, timeout_s: float) -> None:
        self._latest = self._reader.catch_up(timeout_s).get(_KEY)

    def state(self, timeout_s: float = 30.0) -> CatalogState:
        """The latest stored state, reading up to the end of the topic first."""
        self._read(timeout_s)
        self._seen = self._latest
        return CatalogState.from_json(self._latest) if self._latest else CatalogState()

    def changed(self, timeout_s: float = 30.0) -> CatalogState | None:
        """The latest stored state if it differs from what :meth:`state` or this method last returned."""
        self._read(timeout_s)
        if self._latest == self._seen:
            return None
        self._seen = self._latest
        return CatalogState.from_json(self._latest) if self._latest else CatalogState()

    def close(self) -> None:
        self._reader.close()

    def __enter__(self) -> CatalogFollower:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def engine_from_state(
    state: CatalogState, engine: SqlEngine | None = None, unplanned: dict[str, str] | None = None
) -> SqlEngine:
    """A SQL engine holding ``state``'s catalog, with each stored persistent query planned again.

    A query that no longer plans is left out of ``engine.queries`` and logged; ``unplanned`` (when given)
    receives its id and why, so callers can list it and keep it when they save the catalog.
    """
    engine = engine or SqlEngine.with_plugins()
    engine.catalog = state.catalog
    engine.properties = dict(state.properties)
    engine.queries = {}
    if unplanned is not None:
        unplanned.clear()
    for query_id, statement in state.queries.items():
        try:
            engine.queries[query_id] = engine.plan(statement)
        except StreamMLError as exc:
            reason = exc.message + (f" ({exc.hint})" if exc.hint else "")
            log.warning("stored query %s no longer plans and is not run: %s", query_id, reason)
            if unplanned is not None:
                unplanned[query_id] = reason
    return engine


def predict_functions(settings: Settings) -> Callable[[SqlEngine], None]:
    """What the runner installs in every engine by default: ``PREDICT`` over the configured registry."""
    from streamml.runtime.predict import provider_for  # the model runtime loads only where it is needed

    return provider_for(settings, follow=False)[0].install


def catalog_engine(
    settings: Settings,
    functions_hook: Callable[[SqlEngine], None] | None = None,
    unplanned: dict[str, str] | None = None,
) -> SqlEngine:
    """An engine over the stored catalog, planned with ``functions_hook`` (default: :func:`predict_functions`)."""
    engine = SqlEngine.with_plugins()
    (functions_hook or predict_functions(settings))(engine)
    return engine_from_state(CatalogStore(settings).load(), engine, unplanned)
