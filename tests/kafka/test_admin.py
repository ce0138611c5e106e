from __future__ import annotations

from collections.abc import Callable

import pytest

from streamml.errors import KafkaError, TopicNotFoundError
from streamml.kafka import Admin

pytestmark = pytest.mark.broker


def test_create_describe_list_delete(admin: Admin, unique: Callable[[str], str]) -> None:
    name = unique("adm")
    assert admin.create_topic(name, partitions=3, config={"cleanup.policy": "compact"})
    assert name in admin.topic_names()
    info = admin.describe_topic(name)
    assert [p.id for p in info.partitions] == [0, 1, 2]
    assert all(p.leader >= 0 and p.isr for p in info.partitions)
    assert info.replication == 1
    assert info.config["cleanup.policy"] == "compact"
    assert info.messages == 0
    assert admin.delete_topic(name)
    assert name not in admin.topic_names()


def test_create_existing_topic(admin: Admin, topic: Callable[..., str]) -> None:
    name = topic()
    with pytest.raises(KafkaError, match="already exists"):
        admin.create_topic(name)
    assert admin.create_topic(name, if_not_exists=True) is False


def test_unknown_topic_errors_name_the_topic(admin: Admin, unique: Callable[[str], str]) -> None:
    name = unique("missing")
    with pytest.raises(TopicNotFoundError, match=name):
        admin.describe_topic(name)
    with pytest.raises(TopicNotFoundError, match=name):
        admin.delete_topic(name)
    assert admin.delete_topic(name, if_exists=True) is False


def test_internal_topics_hidden_by_default(admin: Admin) -> None:
    assert all(not n.startswith("__") for n in admin.topic_names())


def test_unreachable_cluster_is_one_clear_error() -> None:
    admin = Admin({"bootstrap.servers": "127.0.0.1:1"}, timeout_s=1.0)
    with pytest.raises(KafkaError, match=r"cannot reach Kafka at 127\.0\.0\.1:1"):
        admin.topic_names()
