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


def test_rows_with_missing_features_are_set_aside_not_bisected(registry: Registry) -> None:
    """A NULL or NaN feature makes that row a predict-stage failure; the batch is scored once per DuckDB
    chunk, not re-run in halves (which took ~28 runs for one bad row in 10,000)."""
    from streamml.sql import SqlEngine

    provider = ModelProvider(registry)
    engine = SqlEngine.with_plugins()
    provider.install(engine)
    engine.execute(
        "CREATE STREAM s (id INT, V1 DOUBLE, V2 DOUBLE, V3 DOUBLE) WITH (KAFKA_TOPIC='s', VALUE_FORMAT='JSON');"
    )
    n = 10_000
    data = transactions(n, seed=5).select(FEATURES).to_pydict()
    data["V2"][17] = None
    data["V3"][4_321] = float("nan")
    data["V1"][9_999] = None
    batch = pa.table({"id": list(range(n)), **data})
    calls: list[int] = []
    model = provider.serve("m").model
    score = model.predict
    model.predict = lambda inputs: calls.append(len(inputs[0])) or score(inputs)  # type: ignore[method-assign]
    executor = engine.plan("SELECT id, PREDICT('m', V1, V2, V3) AS p FROM s WHERE id >= 0;").executor()
    out = executor.execute(batch)
    assert sum(calls) == n - 3 and len(calls) <= 5  # every complete row scored once, in DuckDB's chunks
    assert [(f.index, f.stage) for f in out.failures] == [(17, "predict"), (4_321, "predict"), (9_999, "predict")]
    assert "feature 2 is NULL or NaN" in out.failures[0].reason and "feature 3" in out.failures[1].reason
    assert out.table.num_rows == n - 3 and out.counters["failed"] == 3
    ids = out.table.column("ID").to_pylist()
    assert 17 not in ids and 4_321 not in ids and ids[:3] == [0, 1, 2]
    assert out.table.column("P").null_count == 0
    aggregated = engine.plan(
        "SELECT id, COUNT(*) AS n, MAX(PREDICT('m', V1, V2, V3)->score) AS top FROM s GROUP BY id;"
    )
    result = aggregated.executor().execute(batch.slice(15, 4))  # no row ids inside GROUP BY: rows isolated by re-runs
    assert [(f.index, f.stage) for f in result.failures] == [(2, "predict")]
