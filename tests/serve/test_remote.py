"""Remote model versions: PREDICT scoring on a model server, one call per batch, failures as dead letters."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from streamml.errors import ModelError
from streamml.inference.remote import RemoteError, describe
from streamml.models.card import ModelCard, RemoteEndpoint
from streamml.models.registry import Registry
from streamml.runtime.predict import ModelProvider
from tests.serve.conftest import IRIS_ROWS, IRIS_SPECIES, Running, free_port


def remote_registry(
    tmp_path: Path, endpoint: RemoteEndpoint, *, describe_from: RemoteEndpoint | None = None
) -> Registry:
    registry = Registry(str(tmp_path / "runner-registry"))
    signature, output = describe(describe_from or endpoint)
    registry.register_remote("flowers", ModelCard(name="flowers", remote=endpoint, signature=signature, output=output))
    return registry


def columns(rows: np.ndarray) -> list[pa.Array]:
    return [pa.array(rows[:, i].astype(np.float64)) for i in range(rows.shape[1])]


def exec_count(server: Running) -> float:
    return server.server.plane.service.metrics.value("nv_inference_exec_count", model="iris", version="1")


@pytest.mark.parametrize(
    ("scheme", "protocol"), [("grpc", "v2"), ("http", "v2"), ("grpc", "tfserving"), ("http", "tfserving")]
)
def test_predict_scores_a_batch_with_one_call(iris_server: Running, tmp_path: Path, scheme: str, protocol: str) -> None:
    address = iris_server.grpc if scheme == "grpc" else iris_server.http
    endpoint = RemoteEndpoint(url=f"{scheme}://{address}", model="iris", protocol=protocol)  # type: ignore[arg-type]
    provider = ModelProvider(remote_registry(tmp_path, endpoint))
    served = provider.serve("flowers")
    assert served.sql_type == "STRUCT<label VARCHAR, probabilities ARRAY<DOUBLE>, model VARCHAR, version INTEGER>"
    rows = np.repeat(IRIS_ROWS, 400, axis=0)  # 1,200 rows
    before = exec_count(iris_server)
    result = provider.predict("flowers", columns(rows)).to_pylist()
    assert exec_count(iris_server) - before == 1
    assert [r["LABEL"] for r in result] == [s for s in IRIS_SPECIES for _ in range(400)]
    assert {(r["MODEL"], r["VERSION"]) for r in result} == {("flowers", 1)}
    assert all(abs(sum(r["PROBABILITIES"]) - 1) < 1e-5 for r in result)


def test_a_server_that_is_down_sends_the_batch_to_dead_letters_then_opens_the_circuit(
    iris_server: Running, tmp_path: Path
) -> None:
    dead = RemoteEndpoint(url=f"grpc://127.0.0.1:{free_port()}", model="iris", timeout_ms=500, retries=2,
                          backoff_ms=1, breaker_failures=5, breaker_open_s=60)  # fmt: skip
    live = RemoteEndpoint(url=f"grpc://{iris_server.grpc}", model="iris")
    provider = ModelProvider(remote_registry(tmp_path, dead, describe_from=live))
    model = provider.serve("flowers").model
    rejected: list[tuple[int, str]] = []
    out = provider.predict("flowers", columns(IRIS_ROWS), lambda mask, why: rejected.append((int(mask.sum()), why)))
    assert out.null_count == 3
    ((count, why),) = rejected
    assert count == 3
    assert (
        "PREDICT('flowers')" in why and dead.url in why and "cannot reach the server" in why and "after 3 tries" in why
    )
    assert model.calls == 3  # the first try and two retries
    provider.predict("flowers", columns(IRIS_ROWS), lambda mask, why: rejected.append((int(mask.sum()), why)))
    assert model.calls == 5 and model.breaker.open  # five failed calls in a row open the circuit
    with pytest.raises(RemoteError, match="circuit open"):
        provider.predict("flowers", columns(IRIS_ROWS))
    assert model.calls == 5  # an open circuit fails at once, without a call


def test_a_refused_request_is_not_retried(iris_server: Running, tmp_path: Path) -> None:
    endpoint = RemoteEndpoint(url=f"http://{iris_server.http}", model="iris", retries=3)
    provider = ModelProvider(remote_registry(tmp_path, endpoint))
    model = provider.serve("flowers").model
    with pytest.raises(ModelError, match="HTTP 400"):
        model.predict({model.signature.inputs[0].name: np.ones((2, 3), np.float32)})
    assert model.calls == 1


def test_registering_reads_the_signature_from_the_server(iris_server: Running) -> None:
    signature, output = describe(RemoteEndpoint(url=f"http://{iris_server.http}", model="iris"))
    (spec,) = signature.inputs
    assert spec.dtype == "float32" and spec.shape == [None, 4]
    assert [(f.name, f.sql_type) for f in output.fields] == [("label", "VARCHAR"), ("probabilities", "ARRAY<DOUBLE>")]
    with pytest.raises(ModelError, match="cannot read the metadata"):
        describe(RemoteEndpoint(url=f"http://{iris_server.http}", model="nope"))


def test_outputs_of_one_value_per_row_map_to_scalars() -> None:
    from streamml.inference.remote import raw_output
    from streamml.models.signature import TensorSpec

    specs = [TensorSpec(name="predict", dtype="string", shape=[None, 1]), TensorSpec(name="p", dtype="float32", shape=[None, 3]),
             TensorSpec(name="n", dtype="int64", shape=[None])]  # fmt: skip
    output = raw_output(specs)
    assert [(f.name, f.sql_type) for f in output.fields] == [
        ("predict", "VARCHAR"),
        ("p", "ARRAY<DOUBLE>"),
        ("n", "BIGINT"),
    ]
    struct = output.postprocess(
        {"predict": np.array([["a"], ["b"]], dtype=object), "p": np.ones((2, 3)), "n": np.arange(2)}
    )
    assert struct.to_pylist() == [{"predict": "a", "p": [1.0] * 3, "n": 0}, {"predict": "b", "p": [1.0] * 3, "n": 1}]
    with pytest.raises(ModelError, match="strings per row"):
        raw_output([TensorSpec(name="s", dtype="string", shape=[None, 2])])
