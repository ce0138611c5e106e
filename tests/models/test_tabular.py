"""The tabular recipe: numeric and string columns in, one named ONNX input per column, encoding in the graph."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pyarrow as pa
import pytest

from streamml.errors import ModelError
from streamml.ingest.census import CENSUS_COLUMNS, LABEL, NUMERIC_COLUMNS, census
from streamml.models.recipes import TrainedModel, get_recipe
from streamml.models.registry import Registry
from streamml.models.runtime import OnnxModel
from streamml.models.training import train_table

FEATURES = [c for c in CENSUS_COLUMNS if c != LABEL]
CLASSES = ["<=50K", ">50K"]


@pytest.fixture(scope="module")
def data() -> pa.Table:
    return census(3000, seed=1)


@pytest.fixture(scope="module")
def trained(data: pa.Table) -> TrainedModel:
    return get_recipe("tabular").train(data, LABEL, {}, 0)


@pytest.fixture(scope="module")
def fresh() -> pa.Table:
    return census(400, seed=99).select(FEATURES)


def test_learns_well_above_the_majority_baseline(trained: TrainedModel) -> None:
    metrics = trained.metrics
    assert metrics["accuracy"] > metrics["baseline_accuracy"] + 0.04
    assert metrics["roc_auc"] > 0.85
    assert (metrics["numeric_features"], metrics["categorical_features"]) == (6, 8)
    assert trained.features == FEATURES and trained.label == LABEL
    assert trained.output.classes == CLASSES and trained.output.positive_label == ">50K"
    assert trained.parity.passed and trained.parity.output == "probabilities" and trained.parity.rows == 450


def test_one_named_input_per_column_and_label_and_probability_outputs(trained: TrainedModel) -> None:
    graph = onnx.load_model_from_string(trained.onnx_bytes).graph
    inputs = {i.name: i.type.tensor_type for i in graph.input}
    assert list(inputs) == FEATURES
    for name, tensor in inputs.items():
        expected = onnx.TensorProto.FLOAT if name in NUMERIC_COLUMNS else onnx.TensorProto.STRING
        assert tensor.elem_type == expected, name
        assert [d.dim_value for d in tensor.shape.dim][1:] == [1]
    model = OnnxModel(trained.onnx_bytes)
    assert model.output_names == ["label", "probabilities"]
    assert [(s.dtype, s.shape and s.shape[1:]) for s in model.signature.outputs] == [("string", []), ("float32", [2])]


def test_columns_in_order_mapping_and_table_score_alike(trained: TrainedModel, fresh: pa.Table) -> None:
    model = OnnxModel(trained.onnx_bytes, feature_names=trained.features)
    by_table = model.predict(fresh)
    by_position = model.predict([fresh.column(c) for c in FEATURES])
    shuffled = {c: fresh.column(c).to_numpy(zero_copy_only=False) for c in reversed(FEATURES)}
    by_name = model.predict(shuffled)
    for got in (by_position, by_name):
        np.testing.assert_array_equal(got["label"], by_table["label"])
        np.testing.assert_allclose(got["probabilities"], by_table["probabilities"], atol=1e-6)
    assert set(by_table["label"]) <= set(CLASSES)
    np.testing.assert_allclose(by_table["probabilities"].sum(axis=1), 1.0, atol=1e-5)
    with pytest.raises(ModelError, match="has 14 inputs, got 13 columns"):
        model.predict([fresh.column(c) for c in FEATURES[:-1]])


def test_parity_with_scikit_learn_on_fresh_rows(data: pa.Table, fresh: pa.Table) -> None:
    from sklearn.compose import ColumnTransformer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import OneHotEncoder, StandardScaler

    from streamml.models.recipes.tabular import _frame, column_arrays, export_columns

    categorical = [c for c in FEATURES if c not in NUMERIC_COLUMNS]
    arrays = column_arrays(data.select(FEATURES), NUMERIC_COLUMNS, categorical)
    y = np.asarray(data.column(LABEL).to_numpy(zero_copy_only=False))
    prepare = ColumnTransformer([("n", StandardScaler(), NUMERIC_COLUMNS),
                                 ("c", OneHotEncoder(handle_unknown="ignore"), categorical)])  # fmt: skip
    pipeline = Pipeline([("prepare", prepare), ("model", LogisticRegression(max_iter=1000))])
    pipeline.fit(_frame(arrays, np.arange(len(y))), y)
    onnx_bytes, parity = export_columns(pipeline, arrays, np.arange(200), NUMERIC_COLUMNS, tolerance=1e-4)
    assert parity.max_abs_diff <= 1e-5
    new = column_arrays(fresh, NUMERIC_COLUMNS, categorical)
    got = OnnxModel(onnx_bytes).predict(new)
    expected = pipeline.predict_proba(_frame(new, np.arange(fresh.num_rows)))
    np.testing.assert_allclose(got["probabilities"], expected, atol=1e-5)
    assert list(got["label"]) == list(pipeline.predict(_frame(new, np.arange(fresh.num_rows))))


@pytest.mark.parametrize("params", [None, {"model": "gbdt", "max_iter": 40}], ids=["logistic-onehot", "gbdt-ordinal"])
def test_an_unseen_category_scores_instead_of_failing(
    request: pytest.FixtureRequest, data: pa.Table, fresh: pa.Table, params: dict | None
) -> None:
    trained = (
        request.getfixturevalue("trained") if params is None else get_recipe("tabular").train(data, LABEL, params, 0)
    )
    assert trained.metrics["accuracy"] > trained.metrics["baseline_accuracy"] + 0.04
    model = OnnxModel(trained.onnx_bytes)
    columns = {c: fresh.column(c).to_numpy(zero_copy_only=False) for c in FEATURES}
    known = model.predict(columns)["probabilities"]
    columns["workclass"] = np.full(fresh.num_rows, "Martian", dtype=object)
    columns["native_country"] = np.full(fresh.num_rows, "Atlantis", dtype=object)
    unseen = model.predict(columns)
    assert np.isfinite(unseen["probabilities"]).all() and set(unseen["label"]) <= set(CLASSES)
    np.testing.assert_allclose(unseen["probabilities"].sum(axis=1), 1.0, atol=1e-5)
    assert not np.allclose(unseen["probabilities"], known)  # the unknown categories do count, as "none of these"


def test_feature_choice_skips_ids_and_honours_named_features() -> None:
    base = census(600, seed=2)
    ids = pa.array([f"person{i}" for i in range(600)])
    table = base.append_column("person", ids).append_column("tags", pa.array([[1.0]] * 600))
    trained = get_recipe("tabular").train(table, LABEL, {"exclude": ["fnlwgt"]}, 0)
    assert trained.features == [c for c in FEATURES if c != "fnlwgt"]  # no id column, no list column
    named = get_recipe("tabular").train(table, LABEL, {"features": ["sex", "age", "education"]}, 0)
    assert named.features == ["sex", "age", "education"]
    assert OnnxModel(named.onnx_bytes).input_names == ["sex", "age", "education"]
    with pytest.raises(ModelError, match="numeric and string columns, not tags"):
        get_recipe("tabular").train(table, LABEL, {"features": ["age", "tags"]}, 0)
    with pytest.raises(ModelError, match="unknown tabular model 'forest'"):
        get_recipe("tabular").train(table, LABEL, {"model": "forest"}, 0)
    with pytest.raises(ModelError, match="needs a label column"):
        get_recipe("tabular").train(table, None, {}, 0)


def test_predict_in_sql_scores_string_and_numeric_columns(data: pa.Table, tmp_path: Path) -> None:
    """PREDICT passes the columns in order; rows with a NULL feature (string or number) are set aside."""
    from streamml.runtime.predict import ModelProvider
    from streamml.sql import SqlEngine

    registry = Registry(str(tmp_path / "registry"))
    version = train_table("tabular", data, LABEL, {}, name="census", registry=registry, seed=0)
    reference = version.card.reference
    assert reference is not None and set(reference.features) == set(FEATURES)
    # numeric columns have histograms, string columns the count of each category seen in training
    assert all(reference.features[c].bin_counts and not reference.features[c].categories for c in NUMERIC_COLUMNS)
    strings = [c for c in FEATURES if c not in NUMERIC_COLUMNS]
    assert strings and all(reference.features[c].categories for c in strings)
    first = strings[0]
    assert sum(reference.features[first].categories.values()) == reference.features[first].count > 0
    assert "probability" in reference.outputs
    provider = ModelProvider(registry)
    engine = SqlEngine.with_plugins()
    provider.install(engine)
    columns = ", ".join(f"{c} {'BIGINT' if c in NUMERIC_COLUMNS else 'VARCHAR'}" for c in CENSUS_COLUMNS)
    engine.execute(f"CREATE STREAM census ({columns}) WITH (KAFKA_TOPIC='census', VALUE_FORMAT='JSON');")
    rows = census(300, seed=8).to_pydict()
    rows["workclass"][3] = None
    rows["age"][7] = None
    rows["occupation"][5] = "Astronaut"
    batch = pa.table(rows, schema=data.schema)
    sql = f"SELECT age, PREDICT('census', {', '.join(FEATURES)}) AS p, PREDICT('census')->label AS l FROM census;"
    out = engine.plan(sql).executor().execute(batch)
    assert [(f.index, f.stage) for f in out.failures] == [(3, "predict"), (7, "predict")]
    assert "feature 2 is NULL" in out.failures[0].reason
    assert out.table.num_rows == 298
    scored = out.table.column("P").combine_chunks()
    labels = scored.field("LABEL").to_pylist()
    assert labels == out.table.column("L").to_pylist() and set(labels) <= set(CLASSES)
    assert set(scored.field("MODEL").to_pylist()) == {"census"}
    kept = batch.filter(pa.array([i not in (3, 7) for i in range(300)]))
    expected = version.load().predict(kept.select(FEATURES))
    assert labels == list(expected["label"])
    np.testing.assert_allclose(scored.field("PROBABILITY").to_numpy(), expected["probabilities"].max(axis=1), atol=1e-6)
