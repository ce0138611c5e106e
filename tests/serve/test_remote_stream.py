"""A persistent query scoring on a model server survives the server dying and coming back mid-stream:
every record is scored exactly once or dead-lettered with the reason, none lost, none duplicated."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import orjson
import pytest
from confluent_kafka import Consumer, TopicPartition

from streamml.config import Settings
from streamml.inference.remote import describe
from streamml.kafka import Admin, Producer
from streamml.models.card import ModelCard, RemoteEndpoint
from streamml.models.registry import Registry
from streamml.runtime.naming import dead_letter_topic, group_id
from streamml.runtime.session import Session, wait_for
from tests.runtime.conftest import running
from tests.runtime.test_predict import read
from tests.serve.conftest import IRIS_ROWS, ServeProcess, free_port

pytestmark = pytest.mark.broker


def iris_values(first: int, n: int) -> list[bytes]:
    rows = IRIS_ROWS[[i % 3 for i in range(first, first + n)]]
    names = ["SL", "SW", "PL", "PW"]
    return [
        orjson.dumps({"ID": first + i, **dict(zip(names, map(float, row), strict=True))}) for i, row in enumerate(rows)
    ]


def committed_to_end(config: dict, group: str, topic: str) -> bool:
    """Whether ``group`` has committed offsets up to the end of every partition of ``topic``."""
    ends = {p: high for p, (_, high) in Admin(config).watermarks(topic).items()}
    consumer = Consumer({**config, "group.id": group})
    try:
        committed = consumer.committed([TopicPartition(topic, p) for p in ends], timeout=10)
    finally:
        consumer.close()
    return all(tp.offset >= ends[tp.partition] for tp in committed)


def test_remote_predict_survives_a_server_kill_and_restart(
    serve_registry: Registry, kafka_settings: Settings, kafka_config: dict, topic: Callable[..., str],
    unique: Callable[[str], str], tmp_path: Path,
) -> None:  # fmt: skip
    http, grpc = free_port(), free_port()
    server = ServeProcess(serve_registry, tmp_path / "serve", http_port=http, grpc_port=grpc).wait_ready()
    # an outage longer than a call's retries cover (2 x 300 ms): the batches it hits fail for good
    endpoint = RemoteEndpoint(url=f"grpc://127.0.0.1:{grpc}", model="iris", timeout_ms=300, retries=1,
                              backoff_ms=20, breaker_failures=3, breaker_open_s=0.5)  # fmt: skip
    runner_registry = Registry(str(tmp_path / "runner-registry"))
    signature, output = describe(endpoint)
    runner_registry.register_remote("flowers", ModelCard(name="flowers", remote=endpoint, signature=signature,
                                                         output=output))  # fmt: skip
    settings = kafka_settings.model_copy(update={"service_id": unique("svc"), "registry_url": runner_registry.root_url})
    session = Session(settings)
    source, sink = topic(partitions=2), unique("scored")
    session.execute(f"CREATE STREAM flowers_in (ID BIGINT, SL DOUBLE, SW DOUBLE, PL DOUBLE, PW DOUBLE) "
                    f"WITH (KAFKA_TOPIC='{source}', VALUE_FORMAT='JSON');")  # fmt: skip
    query_id = session.execute(
        f"CREATE STREAM scored WITH (KAFKA_TOPIC='{sink}') AS "
        "SELECT ID, PREDICT('flowers', SL, SW, PL, PW) AS P FROM flowers_in;"
    )[0].result.query_id
    assert query_id is not None
    dlq = dead_letter_topic(settings.service_id, query_id)
    total, chunk = 0, 200
    try:
        with running(session), Producer(kafka_config) as producer:

            def send(chunks: int) -> None:
                nonlocal total
                for _ in range(chunks):
                    producer.produce_batch(source, iris_values(total, chunk))
                    producer.flush()
                    total += chunk

            send(10)
            assert wait_for(lambda: len(read(kafka_config, sink)) > 0, 60), "nothing scored before the kill"
            server.proc.kill()  # no drain: the server dies with calls in flight
            server.finish()
            send(10)
            outage = wait_for(lambda: bool(read(kafka_config, dlq)), 60)
            assert outage, "no batch failed for good while the server was down"
            server = ServeProcess(serve_registry, tmp_path / "serve", http_port=http, grpc_port=grpc).wait_ready()
            back = total  # the first record sent after the restart

            def resumed() -> bool:
                send(2)  # traffic goes on until records sent after the restart come out scored
                return any(orjson.loads(v)["ID"] >= back for _, _, v, _ in read(kafka_config, sink) if v)

            assert wait_for(resumed, 60, interval_s=0.5), "scoring did not resume after the restart"
            # once the query's offsets are committed to the end, every output is final: a duplicate would be in it
            group = group_id(settings.service_id, query_id)
            assert wait_for(lambda: committed_to_end(kafka_config, group, source), 120), "the input was not all read"
            scored, dead = read(kafka_config, sink), read(kafka_config, dlq)
    finally:
        server.proc.terminate()
        server.finish()
    scored_ids = [orjson.loads(v)["ID"] for _, _, v, _ in scored if v]
    dead_ids = [orjson.loads(v)["ID"] for _, _, v, _ in dead if v]
    assert len(scored_ids) == len(set(scored_ids)) and len(dead_ids) == len(set(dead_ids)), "duplicates"
    assert sorted(scored_ids + dead_ids) == list(range(total)), "records lost"
    assert dead_ids, "the outage produced no dead letters"
    assert max(scored_ids) > max(dead_ids), "records sent after scoring resumed were dead-lettered"
    labels = {orjson.loads(v)["P"]["LABEL"] for _, _, v, _ in scored if v}
    assert labels == {"setosa", "versicolor", "virginica"}
    reasons = {h["streamml.error.message"] for _, _, _, h in dead}
    assert all(endpoint.url in r and "PREDICT('flowers')" in r for r in reasons), reasons
    assert {h["streamml.error.kind"] for _, _, _, h in dead} == {"predict"}
