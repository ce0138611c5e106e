"""Digits as pictures in records: the image recipe trained from a topic of labelled PNGs through SQL, then
the held-out pictures scored by a PREDICT query, undecodable ones dead-lettered."""

from __future__ import annotations

import base64
from collections.abc import Callable
from pathlib import Path

import numpy as np
import orjson
import pytest

import streamml
from streamml.config import Settings
from streamml.ingest.digits import digit_picture
from streamml.kafka import BatchConsumer, Producer, client_config
from streamml.models.registry import Registry
from streamml.runtime.control import publish_events
from streamml.runtime.session import Session, wait_for
from streamml.runtime.topics import dead_letter_topic
from tests.runtime.conftest import running

pytest.importorskip("torch")
PIXELS = "IMAGE_PIXELS(PNG, 8, 8, 16)"


def test_digits_trained_from_a_topic_of_pictures_score_above_97_percent(
    kafka_settings: Settings, unique: Callable[[str], str], tmp_path: Path
) -> None:
    from sklearn.datasets import load_digits

    settings = kafka_settings.model_copy(update={"service_id": unique("svc"), "registry_url": str(tmp_path / "reg")})
    pictures, scored = unique("digit-pictures"), unique("digit-scores")
    session = Session(settings)
    session.execute(f"CREATE STREAM digit_pictures (ID BIGINT, PNG VARCHAR, DIGIT INT) "
                    f"WITH (KAFKA_TOPIC='{pictures}', VALUE_FORMAT='JSON', PARTITIONS=1);")  # fmt: skip
    digits = load_digits()
    records = [orjson.dumps({"ID": i, "PNG": base64.b64encode(digit_picture(x, 32)).decode(), "DIGIT": int(y)})
               for i, (x, y) in enumerate(zip(digits.data, digits.target, strict=True))]  # fmt: skip
    records.append(orjson.dumps({"ID": 5000, "PNG": base64.b64encode(b"torn").decode(), "DIGIT": 1}))
    with Producer(client_config(settings)) as producer:
        producer.produce_batch(pictures, records)

    # every fifth picture is held out: trained on the others, through the same SQL that scores them
    version = streamml.train("image", "digit_pictures", name="digits", label="DIGIT", settings=settings,
                             sql=f"SELECT {PIXELS} AS PIXELS, DIGIT FROM digit_pictures WHERE ID % 5 <> 0 AND ID < 5000",
                             params={"epochs": 40})  # fmt: skip
    assert version.card.lineage.rows is not None and version.card.lineage.rows >= 1_400
    publish_events(settings, [Registry(settings.registry_root).promote("digits", version.version)])
    session.execute(f"CREATE STREAM digit_scores WITH (KAFKA_TOPIC='{scored}', VALUE_FORMAT='JSON') AS "
                    f"SELECT ID, DIGIT, PREDICT('digits', {PIXELS}) AS P FROM digit_pictures WHERE ID % 5 = 0;")  # fmt: skip
    held_out = sum(1 for i in range(len(digits.target)) if i % 5 == 0)
    replies: list[dict] = []
    with running(session) as runner, BatchConsumer(client_config(settings), [scored], start="earliest") as reader:

        def all_scored() -> bool:
            replies.extend(orjson.loads(v) for v in reader.poll_batch(10_000, 0.2).values)
            return len(replies) >= held_out

        assert wait_for(all_scored, 120, 0.1), len(replies)
        query = next(m for m in runner.status() if "DIGIT_SCORES" in m.query_id)
        assert wait_for(lambda: next(m for m in runner.status() if m.query_id == query.query_id).dead_letters == 1, 30)
    accuracy = np.mean([str(r["P"]["LABEL"]) == str(r["DIGIT"]) for r in replies])
    assert accuracy >= 0.97, accuracy
    dlq_topic = dead_letter_topic(settings.service_id, query.query_id)
    with BatchConsumer(client_config(settings), [dlq_topic], start="earliest") as dlq:
        dead = dlq.poll_batch(10, 10)
    assert len(dead) == 1 and b"cannot decode the image" in dict(dead.headers[0])["streamml.error.message"]
