"""Request/reply over Kafka: ``streamml.Client`` against a ``PREDICT`` query on the test broker."""

from __future__ import annotations

import asyncio
import subprocess
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

import streamml
from streamml.config import Settings
from streamml.errors import InputError, TopicNotFoundError
from streamml.kafka import BatchConsumer, client_config
from streamml.kafka.headers import H_CORRELATION_ID, H_MODEL, H_REPLY_TOPIC, reply_headers
from streamml.models.registry import Registry
from streamml.models.training import train_table
from streamml.runtime.control import publish_events
from streamml.runtime.session import Session
from streamml.serve.requests import Client, RequestTimeout
from tests.runtime.conftest import running
from tests.serve.conftest import iris_table

FEATURES = ["SEPAL_LENGTH", "SEPAL_WIDTH", "PETAL_LENGTH", "PETAL_WIDTH"]


def test_reply_headers_are_picked_per_output_row() -> None:
    headers = [None, [(H_CORRELATION_ID, b"a"), ("other", b"x"), (H_REPLY_TOPIC, b"r")], [("other", b"y")]]
    assert reply_headers([None, None], np.array([0, 1]), np.array([0, 1])) is None  # no headers: nothing to do
    # output rows -> decoded rows (-1: an aggregate's row) -> batch records (decoded row 0 is record 1, ...)
    picked = reply_headers(headers, np.array([0, 2, -1, 1, 0]), np.array([1, 2, 0]))
    assert picked == [[(H_CORRELATION_ID, b"a"), (H_REPLY_TOPIC, b"r")], [], [], [], [(H_CORRELATION_ID, b"a"),
                      (H_REPLY_TOPIC, b"r")]]  # fmt: skip


@dataclass
class Replying:
    settings: Settings
    requests: str
    replies: str
    expected: dict[int, str]  # request ID -> the label the model gives its row


@pytest.fixture
def iris_replies(kafka_settings: Settings, unique: Callable[[str], str], tmp_path: Path) -> Iterator[Replying]:
    settings = kafka_settings.model_copy(update={"service_id": unique("svc"), "registry_url": str(tmp_path / "reg")})
    registry = Registry(settings.registry_root)
    table = iris_table()
    version = train_table("classifier", table, "species", {"model": "logistic"}, name="iris", registry=registry)
    publish_events(settings, [registry.promote("iris", version.version)])
    labels = version.load().predict(np.column_stack([table.column(i).to_numpy() for i in range(4)]).astype("f4"))
    requests, replies = unique("requests"), unique("replies")
    session = Session(settings)
    session.execute(
        f"CREATE STREAM requests (ID BIGINT, {', '.join(f + ' DOUBLE' for f in FEATURES)}) "
        f"WITH (KAFKA_TOPIC='{requests}', VALUE_FORMAT='JSON', PARTITIONS=3);"
        f"CREATE STREAM replies WITH (KAFKA_TOPIC='{replies}', VALUE_FORMAT='JSON') AS "
        f"SELECT ID, PREDICT('iris', {', '.join(FEATURES)}) AS P FROM requests;"
    )
    expected = {i: str(label) for i, label in enumerate(np.asarray(labels["label"]).reshape(-1))}
    with running(session):
        yield Replying(settings, requests, replies, expected)


def _request(i: int) -> dict[str, float | int]:
    row = iris_table().slice(i % 150, 1).to_pylist()[0]
    return {"ID": i, **{f: row[f.lower()] for f in FEATURES}}


def test_ten_thousand_requests_from_fifty_callers_each_get_their_own_reply_once(iris_replies: Replying) -> None:
    callers, per_caller = 50, 200
    rows = [_request(i) for i in range(150)]
    failures: list[str] = []
    with Client(iris_replies.settings) as client:
        client.predict(iris_replies.requests, {**rows[0], "ID": -1}, timeout=60)  # the query stands ready

        def call(caller: int) -> None:
            for n in range(per_caller):
                i = caller * per_caller + n
                reply = client.predict(iris_replies.requests, {**rows[i % 150], "ID": i}, timeout=60)
                if reply["ID"] != i or reply["P"]["LABEL"] != iris_replies.expected[i % 150]:
                    failures.append(f"request {i} got {reply}")

        threads = [threading.Thread(target=call, args=(c,)) for c in range(callers)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(300)
    assert not failures, failures[:5]
    # exactly once on the reply topic too: one committed reply per request, each with its own correlation id
    seen: dict[bytes, int] = {}
    with BatchConsumer(client_config(iris_replies.settings), [iris_replies.replies], start="earliest") as reader:
        for _ in range(200):
            batch = reader.poll_batch(20_000, 0.5)
            for headers in batch.headers:
                cid = dict(headers)[H_CORRELATION_ID]
                seen[cid] = seen.get(cid, 0) + 1
            if len(seen) >= callers * per_caller + 1 and not len(batch):
                break
    assert len(seen) == callers * per_caller + 1 and set(seen.values()) == {1}


def test_replies_carry_the_request_headers_and_the_model_version(iris_replies: Replying) -> None:
    with Client(iris_replies.settings) as client:
        assert client.route("iris") == (iris_replies.requests, iris_replies.replies)  # found by model name
        assert client.route("requests") == (iris_replies.requests, iris_replies.replies)  # by stream name
        reply = client.predict("iris", _request(7), timeout=60)
    assert reply["ID"] == 7 and reply["P"]["LABEL"] == iris_replies.expected[7]
    with BatchConsumer(client_config(iris_replies.settings), [iris_replies.replies], start="earliest") as reader:
        batch = reader.poll_batch(10, 10)
    headers = dict(batch.headers[0])
    assert headers[H_REPLY_TOPIC] == iris_replies.replies.encode() and len(headers[H_CORRELATION_ID]) == 16
    assert headers[H_MODEL].decode().startswith("iris:")


def test_async_and_batch_calls(iris_replies: Replying) -> None:
    with streamml.Client(iris_replies.settings) as client:
        batch = client.predict_batch(iris_replies.requests, [_request(i) for i in range(300)], timeout=60)
        assert [r["ID"] for r in batch] == list(range(300))

        async def many() -> list[dict]:
            return await asyncio.gather(*(client.predict_async("iris", _request(i), timeout=60) for i in range(40)))

        replies = asyncio.run(many())
    assert [r["P"]["LABEL"] for r in replies] == [iris_replies.expected[i] for i in range(40)]


def test_no_reply_is_a_clear_timeout_and_unknown_targets_are_refused(
    iris_replies: Replying, unique: Callable[[str], str]
) -> None:
    with Client(iris_replies.settings) as client:
        nobody = unique("nobody")
        Session(iris_replies.settings).execute(
            f"CREATE STREAM nobody (ID BIGINT) WITH (KAFKA_TOPIC='{nobody}', VALUE_FORMAT='JSON', PARTITIONS=1);"
        )
        with pytest.raises(RequestTimeout) as late:
            client.predict(nobody, {"ID": 1}, reply=iris_replies.replies, timeout=1.0)
        assert nobody in late.value.message and iris_replies.replies in late.value.message
        with pytest.raises(InputError, match="no persistent query reads 'nothing'"):
            client.predict("nothing", {"ID": 1})
        with pytest.raises(TopicNotFoundError):
            client.predict(unique("missing"), {"ID": 1}, reply=iris_replies.replies)


def test_the_request_command_prints_the_reply(
    iris_replies: Replying, cli: Callable[..., subprocess.CompletedProcess[str]]
) -> None:
    import orjson

    env = {"STREAMML_SERVICE_ID": iris_replies.settings.service_id}
    proc = cli("request", iris_replies.requests, "--reply", iris_replies.replies, "--json",
               orjson.dumps(_request(3)).decode(), env=env)  # fmt: skip
    reply = orjson.loads(proc.stdout)
    assert reply["ID"] == 3 and reply["P"]["LABEL"] == iris_replies.expected[3]
    assert "reply on" in proc.stderr and " ms" in proc.stderr
    bad = cli("request", iris_replies.requests, "--reply", iris_replies.replies, "--json", "[1]", env=env, check=False)
    assert bad.returncode != 0 and "JSON object" in bad.stderr and "Traceback" not in bad.stderr
