"""The census model as the demos served it: trained by the tabular recipe from simulated census records,
then scored by tritonclient (HTTP and gRPC) and by TF Serving's Classify with examples, each answer equal
to the model's own local prediction."""

from __future__ import annotations

from collections.abc import Iterator

import grpc
import numpy as np
import pyarrow as pa
import pytest

from streamml.inference.tfserving_protos import classification_pb2, example_pb2, prediction_service_pb2_grpc
from streamml.ingest.census import census
from streamml.models.registry import Registry
from streamml.models.training import train_table
from tests.serve.conftest import Running, start_server


@pytest.fixture(scope="module")
def census_registry(tmp_path_factory: pytest.TempPathFactory) -> Registry:
    registry = Registry(str(tmp_path_factory.mktemp("census-registry")))
    train_table("tabular", census(3000, seed=1), "income", {}, name="census", registry=registry, seed=1)
    return registry


@pytest.fixture(scope="module")
def server(census_registry: Registry) -> Iterator[Running]:
    yield from start_server(census_registry)


@pytest.fixture(scope="module")
def rows() -> pa.Table:
    return census(40, seed=99)


@pytest.fixture(scope="module")
def expected(census_registry: Registry, rows: pa.Table) -> list[str]:
    version = census_registry.get("census")
    labels = version.load().predict(rows.select(version.card.features))["label"]
    assert len(set(labels)) == 2, "the sample should hold both classes"
    return [str(v) for v in labels]


def column(rows: pa.Table, name: str) -> np.ndarray:
    values = rows.column(name).to_numpy(zero_copy_only=False)
    if values.dtype.kind in "OU":
        return np.asarray([v.encode() for v in values], dtype=object).reshape(-1, 1)
    return values.astype(np.float32).reshape(-1, 1)


@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_tritonclient_scores_census(server: Running, rows: pa.Table, expected: list[str], protocol: str) -> None:
    if protocol == "http":
        import tritonclient.http as client_module

        client = client_module.InferenceServerClient(server.http)
        inputs_meta = client.get_model_metadata("census")["inputs"]
    else:
        import tritonclient.grpc as client_module  # type: ignore[no-redef]

        client = client_module.InferenceServerClient(server.grpc)
        inputs_meta = client.get_model_metadata("census", as_json=True)["inputs"]
    tensors = []
    for spec in inputs_meta:
        data = column(rows, spec["name"])
        tensor = client_module.InferInput(spec["name"], list(data.shape), spec["datatype"])
        tensor.set_data_from_numpy(data)
        tensors.append(tensor)
    assert {spec["datatype"] for spec in inputs_meta} == {"FP32", "BYTES"}
    result = client.infer("census", tensors)
    assert [v.decode() for v in result.as_numpy("label").reshape(-1)] == expected


def test_tfserving_classify_with_examples_scores_census(server: Running, rows: pa.Table, expected: list[str]) -> None:
    request = classification_pb2.ClassificationRequest()
    request.model_spec.name = "census"
    for record in rows.to_pylist():
        example = example_pb2.Example()
        for name, value in record.items():
            if name == "income":
                continue
            feature = example.features.feature[name]
            if isinstance(value, str):
                feature.bytes_list.value.append(value.encode())
            else:
                feature.int64_list.value.append(int(value))
        request.input.example_list.examples.append(example)
    with grpc.insecure_channel(server.grpc) as channel:
        response = prediction_service_pb2_grpc.PredictionServiceStub(channel).Classify(request, timeout=30)
    results = response.result.classifications
    assert [max(c.classes, key=lambda k: k.score).label for c in results] == expected
    assert all(abs(sum(k.score for k in c.classes) - 1) < 1e-5 for c in results)
