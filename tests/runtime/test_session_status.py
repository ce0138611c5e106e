"""Status ages out: a worker that stopped reporting (``kill -9``) is not shown as running, but as last seen."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable

import orjson
import pytest

from streamml.kafka import Admin, Producer
from streamml.runtime.observe import STALE_AFTER_S
from streamml.runtime.session import Session
from streamml.runtime.topics import ensure_status_topic

pytestmark = pytest.mark.broker


def _publish(session: Session, worker: str, seen: float, query_id: str) -> None:
    topic = ensure_status_topic(Admin(session.config), session.settings.service_id)
    record = {"worker": worker, "host": "vm", "time": seen, "refusals": [], "metrics_port": None,
              "queries": [{"query": query_id, "state": "RUNNING", "error": None, "rate_in": 0.0, "records_in": 0,
                           "records_out": 0, "dead_letters": 0, "lag": {}, "model_versions": {}}]}  # fmt: skip
    with Producer(session.config) as producer:
        producer.produce_batch(topic, [orjson.dumps(record)], [worker.encode()])


def test_a_silent_worker_is_shown_as_last_seen(
    session: Session, topic: Callable[..., str], cli: Callable[..., subprocess.CompletedProcess[str]]
) -> None:
    source = topic()
    session.execute(f"CREATE STREAM src (x DOUBLE) WITH (KAFKA_TOPIC='{source}', VALUE_FORMAT='JSON');")
    query_id = session.execute("CREATE STREAM doubled AS SELECT x * 2 AS y FROM src;")[0].result.query_id
    assert query_id is not None
    _publish(session, "vm/111", time.time() - 10 * STALE_AFTER_S, query_id)  # killed long ago
    _publish(session, "vm/222", time.time() + 60, query_id)  # reporting (ahead, so it stays fresh in this test)

    shown = session.execute("SHOW QUERIES;")[0].message
    line = next(row for row in shown.splitlines() if row.startswith(query_id))
    assert "RUNNING on vm/222" in line
    assert "RUNNING on vm/111" not in line and "worker vm/111 last seen" in line and "UTC" in line

    status = cli("status", env={"STREAMML_SERVICE_ID": session.settings.service_id}).stdout
    rows = {row.split()[1]: row for row in status.splitlines() if row.startswith(("│ vm/", "┃ vm/", "| vm/"))}
    assert "last seen" in rows["vm/111"] and "NOT RUNNING" in rows["vm/111"], status
    assert "RUNNING" in rows["vm/222"] and "NOT RUNNING" not in rows["vm/222"], status
