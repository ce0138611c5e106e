from __future__ import annotations

from datetime import UTC, datetime

import numpy as np
import pyarrow as pa
import pytest

from streamml.errors import ModelError
from streamml.models.card import Lineage, ModelCard, OutputSpec, Parity, PartitionRange
from streamml.models.signature import Signature, TensorSpec
from streamml.models.stats import column_stats, reference_stats


def full_card() -> ModelCard:
    x = np.random.default_rng(0).standard_normal((200, 2))
    return ModelCard(
        name="fraud",
        version=3,
        framework="scikit-learn",
        framework_version="1.9.1",
        recipe="autoencoder",
        params={"hidden": [14, 7, 14], "epochs": 10},
        features=["V1", "V2"],
        label="Class",
        signature=Signature(
            inputs=[TensorSpec(name="X", dtype="float32", shape=[None, 2])],
            outputs=[TensorSpec(name="score", dtype="float32", shape=["N"])],
        ),
        lineage=Lineage(
            source="transactions",
            partitions=[PartitionRange(partition=0, start=0, end=100), PartitionRange(partition=1, start=5, end=90)],
            time_start=datetime(2026, 1, 1, tzinfo=UTC),
            time_end=datetime(2026, 1, 2, tzinfo=UTC),
            sql="SELECT V1, V2, Class FROM transactions",
            value_schema={"type": "record", "fields": []},
            rows=185,
        ),
        metrics={"roc_auc": 0.97, "confusion_matrix": [[90, 2], [1, 7]]},
        threshold=0.5,
        threshold_rule="best F1 on validation",
        output=OutputSpec.anomaly(),
        reference=reference_stats(x, ["V1", "V2"], {"score": x[:, 0] ** 2}),
        parity=Parity(max_abs_diff=3e-7, rows=100, output="score"),
        plots=["plots/roc.png"],
    )


def test_json_round_trip() -> None:
    card = full_card()
    again = ModelCard.from_json(card.to_json())
    assert again == card
    assert again.lineage.partitions[1].start == 5
    assert again.reference is not None and set(again.reference.features) == {"V1", "V2"}
    assert again.parity is not None and again.parity.passed


def test_invalid_card_json_is_a_model_error() -> None:
    with pytest.raises(ModelError, match="invalid model card"):
        ModelCard.from_json('{"version": 1}')


def test_anomaly_postprocess_struct() -> None:
    card = full_card()
    assert card.sql_type == "STRUCT<score DOUBLE, is_anomaly BOOLEAN>"
    result = card.postprocess({"score": np.array([0.1, 0.5, 2.0], dtype=np.float32)})
    assert isinstance(result, pa.StructArray)
    assert result.type == pa.struct([("score", pa.float64()), ("is_anomaly", pa.bool_())])
    assert result.field("is_anomaly").to_pylist() == [False, True, True]
    # without a threshold the flag is unknown, the score is still there
    unflagged = card.with_updates(threshold=None).postprocess({"score": np.array([1.0])})
    assert unflagged.field("is_anomaly").null_count == 1


def test_classifier_postprocess_struct() -> None:
    spec = OutputSpec.classifier(["setosa", "versicolor", "virginica"])
    assert spec.sql_type == "STRUCT<label VARCHAR, probability DOUBLE, probabilities ARRAY<DOUBLE>>"
    probs = np.array([[0.7, 0.2, 0.1], [0.1, 0.1, 0.8]], dtype=np.float32)
    result = spec.postprocess({"label": np.array(["x", "y"]), "probabilities": probs})
    assert result.type == spec.arrow_type
    assert result.field("label").to_pylist() == ["setosa", "virginica"]
    np.testing.assert_allclose(result.field("probability").to_numpy(), [0.7, 0.8], rtol=1e-6)
    assert result.field("probabilities").type == pa.list_(pa.float64())
    assert len(result.field("probabilities")[1].as_py()) == 3


def test_binary_classifier_uses_the_threshold_on_the_positive_class() -> None:
    spec = OutputSpec.classifier(["0", "1"], positive_label="1")
    probs = np.array([[0.8, 0.2], [0.6, 0.4], [0.1, 0.9]])
    assert spec.postprocess({"probabilities": probs}).field("label").to_pylist() == ["0", "0", "1"]
    assert spec.postprocess({"probabilities": probs}, 0.3).field("label").to_pylist() == ["0", "1", "1"]
    # a single P(positive) column works too
    single = spec.postprocess({"probabilities": probs[:, 1:]}, 0.3)
    assert single.field("probabilities")[0].as_py() == pytest.approx([0.8, 0.2])


def test_regression_and_raw_postprocess() -> None:
    spec = OutputSpec.regression("variable")
    assert spec.postprocess({"variable": np.array([[1.5], [2.5]])}).field("prediction").to_pylist() == [1.5, 2.5]
    raw = OutputSpec(kind="raw", fields=[]).postprocess({"a": np.arange(2), "b": np.ones((2, 3))})
    assert raw.type.names == ["a", "b"] and raw.field("b")[0].as_py() == [1.0, 1.0, 1.0]


def test_missing_output_is_a_model_error() -> None:
    with pytest.raises(ModelError, match="'score' is missing"):
        OutputSpec.anomaly().postprocess({"other": np.zeros(1)})


def test_column_stats_quantiles_and_histogram() -> None:
    values = np.concatenate([np.arange(100.0), [np.nan]])
    stats = column_stats(values, bins=10)
    assert stats.count == 100 and stats.null_count == 1
    assert stats.quantiles["0.5"] == pytest.approx(49.5)
    assert len(stats.bin_edges) == 11 and sum(stats.bin_counts) == 100
    constant = column_stats(np.ones(5))
    assert sum(constant.bin_counts) == 5


def test_parity_failure_flag() -> None:
    assert not Parity(max_abs_diff=1e-3).passed
    assert not Parity(max_abs_diff=float("nan")).passed
