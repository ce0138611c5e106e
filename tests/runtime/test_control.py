"""Model events on the compacted control topic: published in order, latest per key, bad records skipped."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from streamml.config import Settings
from streamml.kafka import Admin, Producer
from streamml.models.events import ModelEvent
from streamml.models.registry import Registry
from streamml.runtime.control import ControlReader, current_versions, latest_events, publish_events

pytestmark = pytest.mark.broker


def test_registry_events_round_trip_through_the_control_topic(
    kafka_settings: Settings, kafka_config: dict, admin: Admin, unique: Callable[[str], str], tmp_path: Path,
    linear_onnx_bytes: bytes,
) -> None:  # fmt: skip
    control = unique("models")
    registry = Registry(tmp_path / "registry")
    for _ in range(3):
        registry.register("fraud", linear_onnx_bytes)
    events = [registry.promote("fraud", 1), registry.promote("fraud", 2), registry.promote("fraud", 3, "staging")]
    assert publish_events(kafka_settings, events, topic=control) == 3
    assert admin.describe_topic(control).config.get("cleanup.policy") == "compact"

    latest = latest_events(kafka_settings, topic=control)
    assert current_versions(latest) == {"fraud@production": 2, "fraud@staging": 3}
    assert latest["fraud@production"].previous_version == 1

    with ControlReader(kafka_settings, topic=control) as reader:
        reader.catch_up()
        publish_events(kafka_settings, [registry.rollback("fraud")], topic=control)
        with Producer(kafka_config) as producer:  # a stray record must not stop a reader
            producer.produce_batch(control, [b"not an event"], [b"junk"])
        publish_events(kafka_settings, registry.delete("fraud", 3, force=True), topic=control)
        seen: list[ModelEvent] = []
        for _ in range(50):
            seen += reader.poll(0.2)
            if len(seen) >= 3:
                break
        assert [(e.action, e.key, e.version) for e in seen] == [
            ("rollback", "fraud@production", 1),
            ("remove_alias", "fraud@staging", None),
            ("delete", "fraud:3", 3),
        ]
        assert current_versions(reader.latest) == {"fraud@production": 1}


@pytest.fixture(scope="module")
def linear_onnx_bytes() -> bytes:
    import numpy as np
    from sklearn.linear_model import LinearRegression

    from streamml.models.export import export_sklearn

    x = np.random.default_rng(0).standard_normal((40, 3)).astype(np.float32)
    return export_sklearn(LinearRegression().fit(x, x.sum(axis=1)), x[:8]).onnx_bytes
