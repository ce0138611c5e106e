"""Shared data for model tests: a small, seeded, fraud-like table and iris."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

FEATURES = [f"V{i}" for i in range(1, 29)] + ["Amount", "Time"]


def fraud_table(rows: int = 4000, fraud_rate: float = 0.05, seed: int = 0) -> pa.Table:
    """30 correlated features (a 6-dim latent factor model); fraud rows shift several components.

    ``Class`` is a string column ('0' / '1') as in the demo data.
    """
    rng = np.random.default_rng(seed)
    latent = rng.standard_normal((rows, 6))
    mixing = rng.standard_normal((6, 30))
    x = latent @ mixing + 0.3 * rng.standard_normal((rows, 30))
    fraud = rng.random(rows) < fraud_rate
    shift = np.zeros(30)
    shift[[1, 3, 9, 13, 16]] = [4.0, -3.5, 3.0, -4.0, 3.5]
    x[fraud] += shift * (0.6 + 0.8 * rng.random((int(fraud.sum()), 1)))
    columns = {name: x[:, i] for i, name in enumerate(FEATURES)}
    columns["Class"] = np.where(fraud, "1", "0").astype(object)
    return pa.table(columns)


@pytest.fixture(scope="session", autouse=True)
def _single_threaded_numerics() -> Iterator[None]:
    """Small models train fastest on one BLAS/OpenMP thread, and far faster on a busy machine."""
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=1):
        yield


@pytest.fixture(scope="session")
def fraud() -> pa.Table:
    return fraud_table()


@pytest.fixture(scope="session")
def iris() -> pa.Table:
    from sklearn.datasets import load_iris

    data = load_iris()
    names = ["sepal_length", "sepal_width", "petal_length", "petal_width"]
    columns = {name: data.data[:, i] for i, name in enumerate(names)}
    columns["species"] = np.asarray(data.target_names)[data.target].astype(object)
    return pa.table(columns)


@pytest.fixture()
def registry_root(tmp_path: Path) -> Path:
    return tmp_path / "registry"


@pytest.fixture(scope="session")
def linear_onnx() -> bytes:
    """A tiny 3-feature linear regression exported to ONNX (input X float[N,3] -> variable float[N,1])."""
    from sklearn.linear_model import LinearRegression

    from streamml.models.export import export_sklearn

    rng = np.random.default_rng(1)
    x = rng.standard_normal((50, 3)).astype(np.float32)
    model = LinearRegression().fit(x, x @ np.array([1.0, -2.0, 0.5]) + 3.0)
    return export_sklearn(model, x[:10]).onnx_bytes


@pytest.fixture(scope="session")
def trained_autoencoder(fraud: pa.Table, tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    from streamml.models.recipes import get_recipe

    plot_dir = tmp_path_factory.mktemp("ae-plots")
    return get_recipe("autoencoder").train(fraud, "Class", {}, 7, plot_dir=plot_dir)


@pytest.fixture(scope="session")
def trained_gbdt(fraud: pa.Table, tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    from streamml.models.recipes import get_recipe

    plot_dir = tmp_path_factory.mktemp("gbdt-plots")
    return get_recipe("gbdt").train(fraud, "Class", {}, 7, plot_dir=plot_dir)
