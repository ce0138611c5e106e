"""The census-income simulator: reproducible, the Adult data's columns and categories, a learnable label."""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pytest

from streamml.ingest.census import (
    CENSUS_COLUMNS,
    EDUCATION,
    LABEL,
    MARITAL,
    NUMERIC_COLUMNS,
    OCCUPATION,
    POSITIVE,
    WORKCLASS,
    census,
    census_chunks,
    census_schema,
)
from tests.conftest import STREAMML


@pytest.fixture(scope="module")
def rows() -> pa.Table:
    return census(20_000, seed=11)


def test_the_same_seed_gives_the_same_records() -> None:
    assert census(700, seed=3).equals(census(700, seed=3))
    assert not census(700, seed=3).equals(census(700, seed=4))
    chunks = list(census_chunks(25_000, seed=5))
    assert [c.num_rows for c in chunks] == [10_000, 10_000, 5_000]
    assert chunks[2].equals(census(5_000, seed=7))  # chunk i is seeded seed + i


def test_columns_types_and_categories(rows: pa.Table) -> None:
    assert rows.column_names == CENSUS_COLUMNS and rows.schema == census_schema()
    assert all(rows.schema.field(c).type == pa.int64() for c in NUMERIC_COLUMNS)
    assert rows.num_rows == 20_000 and all(rows.column(c).null_count == 0 for c in CENSUS_COLUMNS)
    data = {c: np.asarray(rows.column(c).to_numpy(zero_copy_only=False)) for c in CENSUS_COLUMNS}
    assert set(data[LABEL]) == {"<=50K", ">50K"}
    assert set(data["workclass"]) <= {w[0] for w in WORKCLASS}
    assert set(data["marital_status"]) <= {m[0] for m in MARITAL}
    assert set(data["occupation"]) <= {o[0] for o in OCCUPATION} | {"?"}
    assert set(data["sex"]) == {"Male", "Female"}
    number = dict((e[0], e[1]) for e in EDUCATION)
    assert all(number[e] == n for e, n in zip(data["education"][:500], data["education_num"][:500], strict=True))
    assert data["age"].min() >= 17 and data["age"].max() <= 90 and 35 < data["age"].mean() < 42
    assert data["hours_per_week"].min() >= 1 and data["hours_per_week"].max() <= 99
    assert (data["capital_gain"] >= 0).all() and 0.03 < (data["capital_gain"] > 0).mean() < 0.12
    assert not ((data["capital_gain"] > 0) & (data["capital_loss"] > 0)).any()
    # the public data's dependencies: an unknown work class has an unknown occupation; spouses by sex
    assert set(data["occupation"][data["workclass"] == "?"]) == {"?"}
    husbands = data["relationship"] == "Husband"
    assert set(data["sex"][husbands]) == {"Male"} and set(data["marital_status"][husbands]) <= {
        "Married-civ-spouse",
        "Married-AF-spouse",
    }


def test_label_share_and_its_plausible_dependencies(rows: pa.Table) -> None:
    data = {c: np.asarray(rows.column(c).to_numpy(zero_copy_only=False)) for c in CENSUS_COLUMNS}
    positive = data[LABEL] == POSITIVE
    assert 0.22 < positive.mean() < 0.26
    degree = data["education_num"] >= 13
    assert positive[degree].mean() > positive[~degree].mean() + 0.25
    married = data["marital_status"] == "Married-civ-spouse"
    assert positive[married].mean() > 3 * positive[data["marital_status"] == "Never-married"].mean()
    assert positive[data["capital_gain"] >= 5000].mean() > 0.7
    assert positive[data["age"] < 25].mean() < 0.1


def test_a_linear_model_learns_the_label_well_above_the_majority_baseline(rows: pa.Table) -> None:
    from sklearn.linear_model import LogisticRegression

    categorical = [c for c in CENSUS_COLUMNS if c not in NUMERIC_COLUMNS and c != LABEL]
    parts = []
    for name in NUMERIC_COLUMNS:
        values = rows.column(name).to_numpy().astype(np.float64)
        parts.append(((values - values.mean()) / values.std()).reshape(-1, 1))
    for name in categorical:
        values = np.asarray(rows.column(name).to_numpy(zero_copy_only=False))
        parts.append((values[:, None] == np.unique(values)[None, :]).astype(np.float64))
    x = np.hstack(parts)
    y = np.asarray(rows.column(LABEL).to_numpy(zero_copy_only=False)) == POSITIVE
    model = LogisticRegression(max_iter=500).fit(x[:15_000], y[:15_000])
    accuracy = model.score(x[15_000:], y[15_000:])
    baseline = 1 - y[15_000:].mean()
    assert 0.8 <= accuracy <= 0.87 and accuracy > baseline + 0.05


def test_simulate_census_writes_a_csv(tmp_path: Path) -> None:
    target = tmp_path / "census.csv"
    proc = subprocess.run(
        [STREAMML, "simulate", "census", "--csv", str(target), "--count", "1200", "--seed", "9"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert "wrote 1,200 census records" in proc.stderr
    read = pacsv.read_csv(target)
    assert read.column_names == CENSUS_COLUMNS and read.num_rows == 1200
    expected = census(1200, seed=9)
    assert read.column("occupation").to_pylist() == expected.column("occupation").to_pylist()
    assert read.column("age").to_pylist() == expected.column("age").to_pylist()


@pytest.mark.broker
def test_simulate_census_to_a_topic_then_train_tabular_from_it(cli: Callable[..., subprocess.CompletedProcess[str]],
                                                              unique: Callable[[str], str]) -> None:  # fmt: skip
    name = unique("census")
    produced = cli("simulate", "census", "--topic", name, "--count", "3000", "--partitions", "2")
    assert f"produced 3,000 census records to {name}" in produced.stderr
    trained = cli("train", "tabular", "--from", name, "--label", "income", "--name", "census", "--threads", "1")
    assert "registered census:1" in trained.stdout and "accuracy" in trained.stdout
    shown = cli("models", "show", "census")
    assert "features (14): age, workclass, fnlwgt, education," in shown.stdout
    assert "recipe: tabular" in shown.stdout and f"source: {name}" in shown.stdout
