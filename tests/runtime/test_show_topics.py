"""SHOW TOPICS on a cluster lists the cluster's topics, as ksqlDB does, not only those of the catalog."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from streamml.kafka import Admin
from streamml.runtime.session import Session

pytestmark = pytest.mark.broker


def test_show_topics_lists_topics_no_stream_reads(session: Session, admin: Admin, unique: Callable[[str], str]) -> None:
    plain = unique("plain")
    admin.create_topic(plain, partitions=1)
    (shown,) = session.execute("SHOW TOPICS;")
    names = shown.result.message.splitlines()
    assert plain in names and not any(n.startswith("_") for n in names)
