"""Against another vendor's OIP v2 server: MLServer 1.7 serving the iris pipeline with its scikit-learn runtime.

Opt-in (``pytest -m peer``) and skipped unless ``bash scripts/setup-mlserver.sh`` made ``.venv-mlserver``.
tritonclient's answers check the peer's setup; streamml's remote versions must then read MLServer's
metadata and score a whole batch in one call with the labels of the pipeline MLServer serves.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pytest
from benchmarks.serve_vs_mlserver import INPUT, MLSERVER_VENV, Server, mlserver_server, train_iris

from streamml.inference.remote import describe
from streamml.models.card import ModelCard, RemoteEndpoint
from streamml.models.registry import Registry
from streamml.runtime.predict import ModelProvider
from tests.serve.conftest import IRIS_ROWS, IRIS_SPECIES

pytestmark = [
    pytest.mark.peer,
    pytest.mark.skipif(
        not (MLSERVER_VENV / "bin" / "mlserver").exists(),
        reason=f"MLServer is not installed in {MLSERVER_VENV}: run bash scripts/setup-mlserver.sh",
    ),
]


@pytest.fixture(scope="module")
def mlserver(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Server, Any]]:
    pipeline = train_iris()
    folder = tmp_path_factory.mktemp("mlserver")
    with mlserver_server(pipeline, folder, max_batch_size=64, max_wait_ms=2.0, workers=1) as server:
        yield server, pipeline


def test_tritonclient_over_http_gets_the_labels(mlserver: tuple[Server, Any]) -> None:
    import tritonclient.http as httpclient

    server, _ = mlserver
    client = httpclient.InferenceServerClient(f"127.0.0.1:{server.http_port}")
    tensor = httpclient.InferInput(INPUT, list(IRIS_ROWS.shape), "FP32")
    tensor.set_data_from_numpy(IRIS_ROWS, binary_data=False)  # MLServer has no binary tensor extension over REST
    reply = client.infer("iris", [tensor], outputs=[httpclient.InferRequestedOutput("predict", binary_data=False)])
    assert [str(v) for v in reply.as_numpy("predict").reshape(-1)] == IRIS_SPECIES
    client.close()


def test_tritonclient_over_grpc_gets_the_labels(mlserver: tuple[Server, Any]) -> None:
    import tritonclient.grpc as grpcclient

    server, _ = mlserver
    client = grpcclient.InferenceServerClient(server.grpc)
    assert client.is_server_live() and client.is_model_ready("iris")
    tensor = grpcclient.InferInput(INPUT, list(IRIS_ROWS.shape), "FP32")
    tensor.set_data_from_numpy(IRIS_ROWS)
    reply = client.infer("iris", [tensor])
    assert [v.decode() for v in reply.as_numpy("predict").reshape(-1)] == IRIS_SPECIES
    client.close()


def endpoint(server: Server, scheme: str) -> RemoteEndpoint:
    address = server.grpc if scheme == "grpc" else f"127.0.0.1:{server.http_port}"
    return RemoteEndpoint(url=f"{scheme}://{address}", model="iris")


def remote_registry(tmp_path: Path, remote: RemoteEndpoint) -> Registry:
    signature, output = describe(remote)
    registry = Registry(str(tmp_path / "runner-registry"))
    registry.register_remote("flowers", ModelCard(name="flowers", remote=remote, signature=signature, output=output))
    return registry


@pytest.mark.parametrize("scheme", ["grpc", "http"])
def test_registering_reads_mlservers_metadata(mlserver: tuple[Server, Any], scheme: str) -> None:
    server, _ = mlserver
    signature, output = describe(endpoint(server, scheme))
    (spec,) = signature.inputs
    assert (spec.name, spec.dtype, spec.shape) == (INPUT, "float32", [None, 4])
    (out,) = signature.outputs
    assert (out.name, out.dtype, out.shape) == ("predict", "string", [None, 1])
    assert [f.name for f in output.fields] == ["predict"]


@pytest.mark.parametrize("scheme", ["grpc", "http"])
def test_a_remote_version_gets_a_batchs_labels_from_mlserver_in_one_call(
    mlserver: tuple[Server, Any], tmp_path: Path, scheme: str
) -> None:
    server, pipeline = mlserver
    provider = ModelProvider(remote_registry(tmp_path, endpoint(server, scheme)))
    model = provider.serve("flowers").model
    rows = np.repeat(IRIS_ROWS, 400, axis=0)  # 1,200 rows
    before = model.calls
    outputs = model.predict({INPUT: rows})
    assert model.calls - before == 1
    assert outputs["predict"].shape == (1200, 1)
    assert list(outputs["predict"].reshape(-1)) == list(pipeline.predict(rows))


# MLServer answers a column of N labels as BYTES of shape [N, 1] (and declares [-1, 1]): one VARCHAR per row.
@pytest.mark.parametrize("scheme", ["grpc", "http"])
def test_predict_scores_a_batch_on_mlserver_with_one_call(
    mlserver: tuple[Server, Any], tmp_path: Path, scheme: str
) -> None:
    server, pipeline = mlserver
    provider = ModelProvider(remote_registry(tmp_path, endpoint(server, scheme)))
    model = provider.serve("flowers").model
    rows = np.repeat(IRIS_ROWS, 400, axis=0)  # 1,200 rows
    before = model.calls
    result = provider.predict("flowers", [pa.array(rows[:, i].astype(np.float64)) for i in range(4)]).to_pylist()
    assert model.calls - before == 1
    assert [r["PREDICT"] for r in result] == list(pipeline.predict(rows))
    assert {(r["MODEL"], r["VERSION"]) for r in result} == {("flowers", 1)}
