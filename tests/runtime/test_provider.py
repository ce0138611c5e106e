"""The model provider without a broker: versions in force are loaded once, those no longer in force go."""

from __future__ import annotations

import pyarrow as pa
import pytest

from streamml.ingest.simulate import transactions
from streamml.models.registry import Registry
from streamml.models.training import train_table
from streamml.runtime.predict import ModelProvider

FEATURES = ["V1", "V2", "V3"]


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Registry:
    reg = Registry(str(tmp_path_factory.mktemp("registry")))
    data = transactions(600, fraud_rate=0.05, seed=4).select([*FEATURES, "Class"])
    data = data.filter(pa.compute.is_valid(pa.compute.field("Class")))
    for seed in (1, 2):
        train_table("autoencoder", data, "Class", {"hidden": [2], "epochs": 2}, name="m", registry=reg, seed=seed)
    reg.promote("m", 1)
    return reg


def test_a_version_no_longer_in_force_is_unloaded(registry: Registry) -> None:
    provider = ModelProvider(registry)
    provider.serve("m")
    provider.serve("m:1")
    assert provider.loaded == ["m:1"]
    provider.on_event(registry.promote("m", 2))
    assert provider.loaded == ["m:1", "m:2"]  # the successor waits for a batch boundary
    assert provider.at_batch_boundary() == {"m": "m:2", "m:1": "m:1"}
    assert provider.loaded == ["m:1", "m:2"]  # 'm:1' is still pinned by name
    provider2 = ModelProvider(registry)
    provider2.serve("m")
    provider2.on_event(registry.promote("m", 1))
    provider2.at_batch_boundary()
    assert provider2.loaded == ["m:1"]
    registry.promote("m", 1)
