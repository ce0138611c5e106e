"""TF Serving's REST API against a running server, with plain HTTP requests as TF Serving clients send them."""

from __future__ import annotations

import base64
from collections.abc import Iterator

import httpx
import numpy as np
import pytest

from tests.serve.conftest import IRIS_FEATURES, IRIS_ROWS, IRIS_SPECIES, Running, start_server
from tests.serve.tabular_models import CENSUS_CASES, tabular_registry


@pytest.fixture(scope="module")
def client(iris_server: Running) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=iris_server.url, timeout=30) as http:
        yield http


@pytest.fixture(scope="module")
def tabular(tmp_path_factory: pytest.TempPathFactory) -> Iterator[httpx.Client]:
    registry = tabular_registry(str(tmp_path_factory.mktemp("tfserving-rest")))
    for running in start_server(registry):
        with httpx.Client(base_url=running.url, timeout=30) as http:
            yield http


def test_status_by_model_version_and_label(client: httpx.Client) -> None:
    status = client.get("/v1/models/iris/versions/2").json()
    assert status == {
        "model_version_status": [
            {"version": "2", "state": "AVAILABLE", "status": {"error_code": "OK", "error_message": ""}}
        ]
    }
    assert client.get("/v1/models/iris/labels/staging").json()["model_version_status"][0]["version"] == "2"
    versions = [s["version"] for s in client.get("/v1/models/iris").json()["model_version_status"]]
    assert "1" in versions and versions == sorted(versions, reverse=True)


def test_metadata_lists_signatures(client: httpx.Client) -> None:
    meta = client.get("/v1/models/iris/metadata").json()
    assert meta["model_spec"] == {"name": "iris", "signature_name": "", "version": "1"}
    defs = meta["metadata"]["signature_def"]["signature_def"]
    default = defs["serving_default"]
    assert default["method_name"] == "tensorflow/serving/predict"
    (name,) = default["inputs"]
    assert default["inputs"][name]["dtype"] == "DT_FLOAT"
    assert [d["size"] for d in default["inputs"][name]["tensor_shape"]["dim"]] == ["-1", "4"]
    assert default["outputs"]["label"]["dtype"] == "DT_STRING"
    assert defs["classification"]["method_name"] == "tensorflow/serving/classify"
    assert client.get("/v1/models/iris/versions/2/metadata").json()["model_spec"]["version"] == "2"


def test_predict_rows_and_columns(client: httpx.Client) -> None:
    rows = client.post("/v1/models/iris:predict", json={"instances": IRIS_ROWS.tolist()})
    assert rows.status_code == 200, rows.text
    predictions = rows.json()["predictions"]
    assert [p["label"] for p in predictions] == IRIS_SPECIES
    assert np.allclose([sum(p["probabilities"]) for p in predictions], 1.0, atol=1e-5)
    columns = client.post("/v1/models/iris/labels/staging:predict", json={"inputs": IRIS_ROWS.tolist()}).json()
    assert columns["outputs"]["label"] == IRIS_SPECIES
    assert np.asarray(columns["outputs"]["probabilities"]).shape == (3, 3)
    named = client.post("/v1/models/iris:predict", json={"inputs": {"X": IRIS_ROWS[:1].tolist()}})
    assert named.json()["outputs"]["label"] == IRIS_SPECIES[:1]


def test_classify_examples_gives_every_class(client: httpx.Client) -> None:
    examples = [dict(zip(IRIS_FEATURES, row.tolist(), strict=True)) for row in IRIS_ROWS]
    response = client.post("/v1/models/iris:classify", json={"examples": examples})
    assert response.status_code == 200, response.text
    results = response.json()["results"]
    assert [max(r, key=lambda pair: pair[1])[0] for r in results] == IRIS_SPECIES
    assert all([label for label, _ in r] == IRIS_SPECIES for r in results)
    assert np.allclose([sum(score for _, score in r) for r in results], 1.0, atol=1e-5)
    # a feature shared by every example can come as context
    shared = {
        "context": {"sepal_width": 3.0},
        "examples": [{k: v for k, v in e.items() if k != "sepal_width"} for e in examples],
    }
    assert len(client.post("/v1/models/iris/versions/2:classify", json=shared).json()["results"]) == 3


def test_classify_and_regress_with_per_column_and_text_features(tabular: httpx.Client) -> None:
    examples = [
        {"age": age, "hours_per_week": hours, "workclass": {"b64": base64.b64encode(work.encode()).decode()}}
        for (age, hours, work), _ in CENSUS_CASES[:1]
    ] + [{"age": age, "hours_per_week": [hours], "workclass": work} for (age, hours, work), _ in CENSUS_CASES[1:]]
    response = tabular.post("/v1/models/census:classify", json={"examples": examples})
    assert response.status_code == 200, response.text
    results = response.json()["results"]
    assert [max(r, key=lambda pair: pair[1])[0] for r in results] == [label for _, label in CENSUS_CASES]
    assert [label for label, _ in results[0]] == ["<=50K", ">50K"]
    regress = tabular.post(
        "/v1/models/width:regress", json={"examples": [{"sepal_length": 5.1, "sepal_width": 3.5, "petal_length": 1.4}]}
    )
    (value,) = regress.json()["results"]
    assert 0.0 < value < 0.6
    refused = tabular.post("/v1/models/census:regress", json={"examples": examples})
    assert refused.status_code == 400 and "not a regression model" in refused.json()["error"]


def test_errors(client: httpx.Client) -> None:
    missing = client.get("/v1/models/nosuch")
    assert missing.status_code == 404 and "nosuch" in missing.json()["error"]
    assert client.post("/v1/models/nosuch:predict", json={"instances": [[1, 2, 3, 4]]}).status_code == 404
    assert client.get("/v1/models/iris/versions/99").status_code == 404
    assert client.get("/v1/models/iris/labels/nolabel").status_code == 404
    wrong = client.post("/v1/models/iris:predict", json={"instances": [[1.0, 2.0, 3.0]]})
    assert wrong.status_code == 400 and "needs 4 at dimension 1" in wrong.json()["error"]
    text = client.post("/v1/models/iris:predict", json={"instances": [["a", "b", "c", "d"]]})
    assert text.status_code == 400 and "got strings" in text.json()["error"]
    lacking = client.post("/v1/models/iris:classify", json={"examples": [{"sepal_length": 5.0}]})
    assert lacking.status_code == 400 and "sepal_width" in lacking.json()["error"]
    assert client.post("/v1/models/iris:predict", json={}).status_code == 400
    assert client.post("/v1/models/iris:predict", content=b"{not json").status_code == 400
    assert (
        client.post("/v1/models/iris:predict", json={"instances": [[1, 2, 3, 4]], "signature_name": "x"}).status_code
        == 400
    )
    assert client.post("/v1/models/iris:explain", json={}).status_code == 404
    assert client.get("/v1/models/iris:predict").status_code == 405
