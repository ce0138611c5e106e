from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa

from streamml.models.card import Lineage, PartitionRange
from streamml.models.registry import Registry
from streamml.models.training import train_table

from .conftest import FEATURES


def test_train_table_registers_a_complete_version(fraud: pa.Table, registry_root: Path) -> None:
    registry = Registry(registry_root)
    lineage = Lineage(
        source="transactions",
        partitions=[PartitionRange(partition=0, start=0, end=4000)],
        sql="SELECT * FROM transactions",
    )
    version = train_table(
        "autoencoder", fraud, "Class", {"epochs": 60}, name="fraud", registry=registry, lineage=lineage, seed=1
    )
    card = version.card
    assert (version.version, card.name, card.recipe, card.framework) == (1, "fraud", "autoencoder", "scikit-learn")
    assert card.lineage.source == "transactions" and card.lineage.rows == fraud.num_rows
    assert card.features == FEATURES and card.label == "Class"
    assert card.metrics["roc_auc"] >= 0.9 and card.threshold is not None
    assert card.parity is not None and card.parity.max_abs_diff <= 1e-4
    assert card.signature is not None and card.signature.output_names == ["score"]
    assert sorted(card.plots) == ["plots/loss.png", "plots/pr.png", "plots/roc.png", "plots/score_histogram.png"]
    assert all((registry_root / "fraud/1" / plot).exists() for plot in card.plots)
    assert card.reference is not None and set(card.reference.features) == set(FEATURES)
    assert set(card.reference.outputs) == {"score", "is_anomaly"}
    assert len(card.reference.features["V1"].bin_counts) == 20

    model = registry.get("fraud").load()
    struct = card.postprocess(model.predict(fraud.slice(0, 100)))
    assert struct.type.names == ["score", "is_anomaly"] and len(struct) == 100


def test_train_table_classifier_with_nulls_dropped(iris: pa.Table, registry_root: Path) -> None:
    values = iris.column("sepal_length").to_numpy().copy()
    values[:3] = np.nan
    table = iris.set_column(0, "sepal_length", pa.array(values))
    version = train_table("classifier", table, "species", name="iris", registry=Registry(registry_root), seed=0)
    assert version.card.metrics["accuracy"] >= 0.9
    assert version.card.sql_type == "STRUCT<label VARCHAR, probability DOUBLE, probabilities ARRAY<DOUBLE>>"
    assert version.card.reference is not None and version.card.reference.features["sepal_length"].null_count == 0
