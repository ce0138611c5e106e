"""Internal topics have one owner: building a store, reader, publisher or query creates nothing on the cluster;
the ensure step of whoever starts them creates each topic with its one configuration."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from streamml.config import Settings
from streamml.kafka import Admin
from streamml.runtime.catalog_store import CatalogState, CatalogStore
from streamml.runtime.control import ControlReader, latest_events
from streamml.runtime.observe import StatusPublisher, read_status
from streamml.runtime.options import RuntimeOptions
from streamml.runtime.query import PersistentQuery
from streamml.runtime.topics import (
    changelog_topic,
    dead_letter_topic,
    ensure_control_topic,
    ensure_status_topic,
    status_topic,
)
from streamml.sql import SqlEngine

pytestmark = pytest.mark.broker


def test_constructing_creates_no_topic_until_the_ensure_step(
    kafka_settings: Settings, admin: Admin, topic: Callable[..., str], unique: Callable[[str], str]
) -> None:
    settings = kafka_settings.model_copy(update={"service_id": unique("svc")})
    service, source, control = settings.service_id, topic(partitions=3), unique("models")
    engine = SqlEngine()
    engine.execute(
        f"CREATE STREAM pings (host VARCHAR KEY, ms BIGINT) WITH (KAFKA_TOPIC='{source}', VALUE_FORMAT='JSON');"
    )
    engine.execute(f"CREATE TABLE counts WITH (KAFKA_TOPIC='{unique('counts')}') AS "
                   "SELECT host, COUNT(*) AS n FROM pings GROUP BY host;")  # fmt: skip
    query_id, plan = next(iter(engine.queries.items()))
    assert plan.sink is not None and plan.stateful

    store = CatalogStore(settings)
    follower = store.follow()
    query = PersistentQuery(query_id, plan, engine.catalog.get(plan.sink.name), settings, RuntimeOptions())
    publisher = StatusPublisher(settings, dict)
    reader = ControlReader(settings, control)
    # reading what is not there yet is not a reason to create it
    assert store.load().queries == {} and follower.state().queries == {}
    assert read_status(settings) == [] and latest_events(settings, control) == {} and reader.catch_up(10) == {}
    internal = {
        settings.catalog_topic, status_topic(service), control,
        dead_letter_topic(service, query_id), changelog_topic(service, query_id),
    }  # fmt: skip
    assert internal.isdisjoint(admin.topic_names())

    store.save(CatalogState())
    query.ensure_topics()
    ensure_status_topic(admin, service)
    ensure_control_topic(admin, control)
    assert internal <= set(admin.topic_names())
    compact_soon = {"cleanup.policy": "compact", "min.cleanable.dirty.ratio": "0.1", "segment.ms": "600000"}
    for name in (settings.catalog_topic, control):
        info = admin.describe_topic(name, with_offsets=False)
        assert len(info.partitions) == 1 and compact_soon.items() <= info.config.items(), (name, info.config)
    changelog = admin.describe_topic(changelog_topic(service, query_id), with_offsets=False)
    assert len(changelog.partitions) == 3 and changelog.config["cleanup.policy"] == "compact"
    assert query.changelog is not None and query.changelog.partitions == 3
    assert admin.describe_topic(status_topic(service)).config["cleanup.policy"] == "compact"
    follower.close()
    reader.close()
    assert publisher.topic == status_topic(service)
