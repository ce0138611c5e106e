"""``streamml dlq show`` and ``dlq replay`` on the dead letters of a real query."""

from __future__ import annotations

import subprocess
from collections.abc import Callable

import pytest

from streamml.config import Settings
from streamml.kafka import Admin, Producer
from streamml.runtime.naming import dead_letter_topic
from streamml.runtime.session import Session, wait_for
from tests.runtime.conftest import running

pytestmark = pytest.mark.broker


def test_show_and_replay_dead_letters(
    cli: Callable[..., subprocess.CompletedProcess[str]], kafka_settings: Settings, kafka_config: dict,
    admin: Admin, topic: Callable[..., str], unique: Callable[[str], str],
) -> None:  # fmt: skip
    service = unique("svc")
    session = Session(kafka_settings.model_copy(update={"service_id": service}))
    source = topic()
    with Producer(kafka_config) as producer:
        producer.produce_batch(
            source, [b'{"n": 1}', b'{"n": "one"}', b'{"n": 2}', b"{broken"], [b"a", b"b", b"c", b"d"]
        )
    session.execute(f"CREATE STREAM nums (n BIGINT) WITH (KAFKA_TOPIC='{source}', VALUE_FORMAT='JSON');")
    query_id = session.execute("CREATE STREAM doubled AS SELECT n * 2 AS twice FROM nums;")[0].result.query_id
    assert query_id is not None
    dlq = dead_letter_topic(service, query_id)
    with running(session):
        assert wait_for(lambda: admin.exists(dlq) and admin.watermarks(dlq)[0][1] >= 2, 60)
    env = {"STREAMML_SERVICE_ID": service, "COLUMNS": "250"}
    shown = cli("dlq", "show", query_id, env=env)
    assert "2 dead letters" in shown.stderr
    assert "decode" in shown.stdout and f"{source}[0]@1" in shown.stdout and f"{source}[0]@3" in shown.stdout
    replayed = cli("dlq", "replay", query_id, env=env)
    assert "replayed 2 dead letters" in replayed.stdout
    assert admin.watermarks(source)[0][1] == 6  # the two records went back to their source
    again = cli("dlq", "replay", query_id, env=env)
    assert "replayed 0 dead letters" in again.stdout  # each dead letter is replayed once
    missing = cli("dlq", "show", "CSAS_NOPE_9", env=env, check=False)
    assert missing.returncode != 0 and "does not exist" in missing.stderr
