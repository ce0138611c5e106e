"""OIP v2 against a running server with the protocol's own clients: tritonclient over HTTP and gRPC."""

from __future__ import annotations

import asyncio
from functools import partial
from pathlib import Path

import httpx
import numpy as np
import pytest

from streamml.inference.tensors import Limits
from streamml.models.registry import Registry
from streamml.models.training import train_table
from streamml.runtime.session import wait_for
from tests.serve.conftest import IRIS_ROWS, IRIS_SPECIES, Running, iris_table, start_server


def test_tritonclient_http_scores_iris(iris_server: Running) -> None:
    import tritonclient.http as httpclient

    client = httpclient.InferenceServerClient(iris_server.http)
    assert client.is_server_live() and client.is_server_ready()
    assert client.is_model_ready("iris")
    meta = client.get_model_metadata("iris")
    assert meta["platform"] == "onnxruntime_onnx"
    (spec,) = meta["inputs"]
    tensor = httpclient.InferInput(spec["name"], list(IRIS_ROWS.shape), "FP32")
    tensor.set_data_from_numpy(IRIS_ROWS)  # binary tensor extension, tritonclient's default
    result = client.infer("iris", [tensor], outputs=[httpclient.InferRequestedOutput("label")])
    assert [v.decode() for v in result.as_numpy("label").reshape(-1)] == IRIS_SPECIES
    assert result.get_response()["model_version"] == "1"


def test_tritonclient_grpc_scores_iris(iris_server: Running) -> None:
    import tritonclient.grpc as grpcclient

    client = grpcclient.InferenceServerClient(iris_server.grpc)
    assert client.is_server_live() and client.is_server_ready()
    meta = client.get_model_metadata("iris", as_json=True)
    (spec,) = meta["inputs"]
    tensor = grpcclient.InferInput(spec["name"], list(IRIS_ROWS.shape), "FP32")
    tensor.set_data_from_numpy(IRIS_ROWS)
    result = client.infer("iris", [tensor], model_version="2")
    assert [v.decode() for v in result.as_numpy("label").reshape(-1)] == IRIS_SPECIES
    assert result.as_numpy("probabilities").shape == (3, 3)
    assert result.get_response().model_version == "2"


def test_plain_json_as_flink_sends_it(iris_server: Running) -> None:
    """No binary extension: one request per record with a JSON body, JSON outputs back."""
    body = {"inputs": [{"name": "X", "shape": [1, 4], "datatype": "FP32", "data": IRIS_ROWS[0].tolist()}]}
    meta = httpx.get(f"{iris_server.url}/v2/models/iris").json()
    body["inputs"][0]["name"] = meta["inputs"][0]["name"]
    reply = httpx.post(f"{iris_server.url}/v2/models/iris/infer", json=body)
    assert reply.status_code == 200, reply.text
    outputs = {o["name"]: o for o in reply.json()["outputs"]}
    assert outputs["label"]["datatype"] == "BYTES" and outputs["label"]["data"] == ["setosa"]
    assert outputs["probabilities"]["shape"] == [1, 3]
    assert reply.json()["model_name"] == "iris" and reply.json()["model_version"] == "1"


def test_an_alias_and_a_version_choose_what_answers(iris_server: Running) -> None:
    import tritonclient.grpc as grpcclient

    client = grpcclient.InferenceServerClient(iris_server.grpc)
    name = client.get_model_metadata("iris", as_json=True)["inputs"][0]["name"]
    tensor = grpcclient.InferInput(name, list(IRIS_ROWS.shape), "FP32")
    tensor.set_data_from_numpy(IRIS_ROWS)
    assert client.infer("iris@staging", [tensor]).get_response().model_version == "2"
    assert client.infer("iris", [tensor], model_version="1").get_response().model_version == "1"
    versions = httpx.get(f"{iris_server.url}/v2/models/iris/versions/2").json()["versions"]
    assert versions == ["1", "2"]


def test_errors_come_back_in_the_protocols_own_shape(iris_server: Running) -> None:
    import tritonclient.grpc as grpcclient
    from tritonclient.utils import InferenceServerException

    url = iris_server.url
    missing = httpx.post(f"{url}/v2/models/nope/infer", json={"inputs": []})
    assert missing.status_code == 404 and "nope" in missing.json()["error"]
    name = httpx.get(f"{url}/v2/models/iris").json()["inputs"][0]["name"]
    wrong = {"inputs": [{"name": name, "shape": [1, 3], "datatype": "FP32", "data": [1.0, 2.0, 3.0]}]}
    bad_shape = httpx.post(f"{url}/v2/models/iris/infer", json=wrong)
    assert bad_shape.status_code == 400 and "needs 4 at dimension 1" in bad_shape.json()["error"]
    short = {"inputs": [{"name": name, "shape": [2, 4], "datatype": "FP32", "data": [1.0, 2.0]}]}
    assert httpx.post(f"{url}/v2/models/iris/infer", json=short).status_code == 400
    garbage = httpx.post(f"{url}/v2/models/iris/infer", content=b"{not json")
    assert garbage.status_code == 400 and "error" in garbage.json()
    assert httpx.get(f"{url}/v2/nowhere").json()["error"]

    client = grpcclient.InferenceServerClient(iris_server.grpc)
    tensor = grpcclient.InferInput(name, [1, 3], "FP32")
    tensor.set_data_from_numpy(np.ones((1, 3), np.float32))
    with pytest.raises(InferenceServerException) as bad:
        client.infer("iris", [tensor])
    assert bad.value.status() == "StatusCode.INVALID_ARGUMENT"
    with pytest.raises(InferenceServerException) as unknown:
        client.infer("nope", [tensor])
    assert unknown.value.status() == "StatusCode.NOT_FOUND"
    # One line per protocol and status, not per request. A gRPC call is counted just after its status is sent,
    # so the last one may land a moment after the client has its answer.
    expected = [f"access protocol={protocol} status={status} requests="
                for protocol, status in [("rest-v2", "404"), ("rest-v2", "400"), ("grpc-v2", "INVALID_ARGUMENT"),
                                         ("grpc-v2", "NOT_FOUND")]]  # fmt: skip
    lines: list[str] = []

    def all_counted() -> bool:
        lines.extend(iris_server.server.access.flush())
        return all(any(line.startswith(prefix) for line in lines) for prefix in expected)

    assert wait_for(all_counted, 10), "\n".join(lines)


def test_concurrent_requests_are_merged_into_fewer_model_calls(iris_server: Running) -> None:
    import tritonclient.http.aio as aioclient

    def counter(text: str, name: str) -> float:
        line = next(ln for ln in text.splitlines() if ln.startswith(f'{name}{{model="iris",version="1"}}'))
        return float(line.rsplit(" ", 1)[1])

    async def burst(n: int) -> list[str]:
        client = aioclient.InferenceServerClient(iris_server.http, conn_limit=n)
        try:
            meta = await client.get_model_metadata("iris")
            tensor = aioclient.InferInput(meta["inputs"][0]["name"], [1, 4], "FP32")
            tensor.set_data_from_numpy(IRIS_ROWS[:1])
            results = await asyncio.gather(*(client.infer("iris", [tensor]) for _ in range(n)))
            return [r.as_numpy("label").reshape(-1)[0].decode() for r in results]
        finally:
            await client.close()

    before = httpx.get(f"{iris_server.url}/metrics").text
    labels = asyncio.run(burst(48))
    after = httpx.get(f"{iris_server.url}/metrics").text
    assert labels == ["setosa"] * 48
    requests = counter(after, "nv_inference_request_success") - counter(before, "nv_inference_request_success")
    executions = counter(after, "nv_inference_exec_count") - counter(before, "nv_inference_exec_count")
    assert requests == 48
    assert executions < requests / 2, f"{requests} requests took {executions} model calls"
    assert "streamml_inference_batch_rows_bucket" in after


def test_a_body_over_the_limit_is_refused_before_it_is_read(serve_registry: Registry) -> None:
    for running in start_server(serve_registry, limits=Limits(max_request_bytes=1024)):
        reply = httpx.post(f"{running.url}/v2/models/iris/infer", content=b"x" * 4096)
        assert reply.status_code == 413 and "1024" in reply.json()["error"]


def answers(url: str, body: dict, version: str) -> bool:
    """Whether ``url`` answers ``body`` with model version ``version``."""
    reply = httpx.post(url, json=body)
    return reply.status_code == 200 and reply.json()["model_version"] == version


def test_promotions_and_new_models_are_followed_live(tmp_path: Path) -> None:
    registry = Registry(str(tmp_path / "registry"))
    for seed in (1, 2):
        train_table(
            "classifier", iris_table(), "species", {"model": "logistic"}, name="iris", registry=registry, seed=seed
        )
    registry.promote("iris", 1)
    for running in start_server(registry):
        url = f"{running.url}/v2/models/iris"
        assert httpx.get(url).json()["versions"] == ["1", "2"]
        name = httpx.get(url).json()["inputs"][0]["name"]
        body = {"inputs": [{"name": name, "shape": [1, 4], "datatype": "FP32", "data": IRIS_ROWS[2].tolist()}]}
        assert httpx.post(f"{url}/infer", json=body).json()["model_version"] == "1"
        registry.promote("iris", 2)
        assert wait_for(partial(answers, f"{url}/infer", body, "2"), 20), "the promotion was not followed"
        lilies = f"{running.url}/v2/models/lilies"
        assert httpx.get(lilies).status_code == 404
        train_table("classifier", iris_table(), "species", {"model": "logistic"}, name="lilies", registry=registry)
        assert wait_for(partial(answers, f"{lilies}/infer", body, "1"), 20), "a newly registered model was not served"


def test_the_model_repository_extension_unloads_and_loads(serve_registry: Registry) -> None:
    import tritonclient.grpc as grpcclient
    import tritonclient.http as httpclient
    from tritonclient.utils import InferenceServerException

    for running in start_server(serve_registry):
        rest, rpc = httpclient.InferenceServerClient(running.http), grpcclient.InferenceServerClient(running.grpc)
        assert "model_repository" in rest.get_server_metadata()["extensions"]
        rest.unload_model("iris")
        assert not rest.is_model_ready("iris") and not rpc.is_model_ready("iris")
        index = {m["name"]: m for m in rest.get_model_repository_index()}
        assert index["iris"]["state"] == "UNAVAILABLE" and index["iris"]["reason"] == "unloaded"
        refused = httpx.get(f"{running.url}/v2/models/iris")
        assert refused.status_code == 404 and "unloaded" in refused.json()["error"]
        rpc.load_model("iris")
        assert rest.is_model_ready("iris") and rpc.is_model_ready("iris", "2")
        rpc.unload_model("iris")
        assert not rest.is_model_ready("iris")
        rest.load_model("iris")
        assert rest.is_model_ready("iris")
        with pytest.raises(InferenceServerException, match="not supported"):
            rest.load_model("iris", config='{"backend": "onnxruntime"}')
        with pytest.raises(InferenceServerException, match="no model 'nope'"):
            rpc.load_model("nope")


def test_a_grpc_stream_answers_every_request_and_a_bad_one_with_its_error(iris_server: Running) -> None:
    import queue

    import tritonclient.grpc as grpcclient

    client = grpcclient.InferenceServerClient(iris_server.grpc)
    name = client.get_model_metadata("iris", as_json=True)["inputs"][0]["name"]
    answers: queue.Queue[tuple[object, object]] = queue.Queue()
    client.start_stream(callback=lambda result, error: answers.put((result, error)))
    try:
        for i in range(20):
            rows = IRIS_ROWS[[i % 3]] if i != 7 else np.ones((1, 3), np.float32)  # request 7 has the wrong shape
            tensor = grpcclient.InferInput(name, list(rows.shape), "FP32")
            tensor.set_data_from_numpy(rows)
            client.async_stream_infer("iris", [tensor], request_id=str(i))
        got = [answers.get(timeout=30) for _ in range(20)]
    finally:
        client.stop_stream()
    labels = {r.get_response().id: r.as_numpy("label")[0].decode() for r, e in got if e is None}  # type: ignore[attr-defined]
    errors = [str(e) for _, e in got if e is not None]
    assert labels == {str(i): IRIS_SPECIES[i % 3] for i in range(20) if i != 7}
    assert len(errors) == 1 and "needs 4 at dimension 1" in errors[0]


def test_tritons_model_config_describes_inputs_batching_and_types(iris_server: Running) -> None:
    import tritonclient.grpc as grpcclient
    import tritonclient.http as httpclient

    rest = httpclient.InferenceServerClient(iris_server.http).get_model_config("iris")
    rpc = grpcclient.InferenceServerClient(iris_server.grpc).get_model_config("iris", as_json=True)["config"]
    assert rest["max_batch_size"] == 64 and rest["platform"] == "onnxruntime_onnx"
    assert [(i["data_type"], i["dims"]) for i in rest["input"]] == [("TYPE_FP32", [4])]
    assert {o["name"]: o["data_type"] for o in rest["output"]} == {"label": "TYPE_STRING", "probabilities": "TYPE_FP32"}
    assert rest["dynamic_batching"]["max_queue_delay_microseconds"] == 2000
    assert rpc["max_batch_size"] == 64 and [i["dims"] for i in rpc["input"]] == [["4"]]  # int64 as JSON strings
