"""Open Inference Protocol v2 over REST, with the binary tensor extension, and Prometheus ``/metrics``.

Routes: ``GET /v2/health/live|ready``, ``GET /v2`` (server metadata), ``GET /v2/models/M[/versions/V]``
(metadata), ``GET .../ready``, ``POST .../infer``, and the model repository extension: ``POST
/v2/repository/index`` and ``POST /v2/repository/models/M/load|unload``. A request body is JSON,
or (binary tensor extension, tritonclient's default, sent without a Content-Type) the JSON header of
``Inference-Header-Content-Length`` bytes followed by the raw tensors in input order. Outputs go binary when
the request asks (``parameters.binary_data`` per output, or ``binary_data_output`` for all). Errors are
``{"error": "..."}`` with 400, 404, 413, 500 or 503. Bodies over the request limit are refused before they
are read whole.
"""

from __future__ import annotations

import logging
import time
import zlib
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from streamml.errors import ModelError
from streamml.inference.tensors import InvalidTensor, datatype_of, from_bytes, from_json, to_bytes, to_json_data
from streamml.serve.dataplane import DataPlane, ModelNotFound, NotReady
from streamml.serve.oip import (
    InferAnswer,
    InferRequest,
    infer,
    model_config,
    model_metadata,
    repository_index,
    server_metadata,
)

log = logging.getLogger(__name__)

HEADER_LENGTH = "Inference-Header-Content-Length"


class TooLarge(InvalidTensor):
    """A body past the request size limit."""


def json_response(content: Any, status: int = 200) -> Response:
    return Response(orjson.dumps(content, option=orjson.OPT_SERIALIZE_NUMPY), status, media_type="application/json")


def error_response(exc: Exception) -> Response:
    """An exception as OIP's error shape, with the status that says whose fault it is."""
    if isinstance(exc, TooLarge):
        status = 413
    elif isinstance(exc, ModelNotFound):
        status = 404
    elif isinstance(exc, NotReady):
        status = 503
    elif isinstance(exc, InvalidTensor):
        status = 400
    elif isinstance(exc, ModelError):
        status = 500
    else:
        log.exception("internal error")
        return json_response({"error": f"internal error: {type(exc).__name__}"}, 500)
    return json_response({"error": str(exc)}, status)


def routes(plane: DataPlane) -> list[BaseRoute]:
    """The OIP v2 REST routes over ``plane``."""

    async def live(_: Request) -> Response:
        return json_response({"live": True})

    async def ready(_: Request) -> Response:
        ok = plane.ready and not plane.draining
        return json_response({"ready": ok}, 200 if ok else 503)

    async def metadata(_: Request) -> Response:
        return json_response(server_metadata(plane))

    async def model(request: Request) -> Response:
        try:
            served = plane.resolve(request.path_params["model"], request.path_params.get("version"))
            return json_response(model_metadata(plane, served))
        except Exception as exc:
            return error_response(exc)

    async def config(request: Request) -> Response:
        try:
            served = plane.resolve(request.path_params["model"], request.path_params.get("version"))
            return json_response(model_config(plane, served))
        except Exception as exc:
            return error_response(exc)

    async def model_ready(request: Request) -> Response:
        name = request.path_params["model"]
        try:
            plane.resolve(name, request.path_params.get("version"))
        except Exception as exc:
            if isinstance(exc, ModelNotFound | NotReady):
                status = 404 if isinstance(exc, ModelNotFound) else 503
                return json_response({"name": name, "ready": False, "error": str(exc)}, status)
            return error_response(exc)
        return json_response({"name": name, "ready": True})

    async def index(_: Request) -> Response:
        return json_response(repository_index(plane))

    async def infer_route(request: Request) -> Response:
        started = time.perf_counter()
        name = request.path_params["model"]
        try:
            body = await read_body(request, plane.limits.max_request_bytes)
            decoded = decode_request(body, request.headers.get(HEADER_LENGTH), plane)
            decoded.model, decoded.version = name, request.path_params.get("version", "")
            answer = await infer(plane, decoded)
        except Exception as exc:
            if isinstance(exc, InvalidTensor):
                plane.service.metrics.failed(None, 1, "input", model=name)
            return error_response(exc)
        log.debug("infer %s: %.1f ms", name, (time.perf_counter() - started) * 1e3)
        return encode_answer(answer)

    async def repository(request: Request) -> Response:
        """``POST /v2/repository/models/M/load|unload``; a load with a config or file override is refused."""
        name, action = request.path_params["model"], request.url.path.rsplit("/", 1)[-1]
        try:
            body = await read_body(request, plane.limits.max_request_bytes)
            parameters = (orjson.loads(body) if body.strip() else {}).get("parameters") or {}
            if action == "load":
                if set(parameters) - {"unload_dependents"}:
                    raise InvalidTensor("loading with a config or file override is not supported: models come "
                                        "from the registry")  # fmt: skip
                await plane.load_model(name)
            else:
                plane.unload_model(name)
        except (orjson.JSONDecodeError, AttributeError):
            return error_response(InvalidTensor("the request body is not a JSON object"))
        except Exception as exc:
            return error_response(exc)
        return json_response({})

    async def metrics(_: Request) -> Response:
        return Response(plane.service.metrics.exposition(), media_type="text/plain; version=0.0.4; charset=utf-8")

    model_paths = ["/v2/models/{model}", "/v2/models/{model}/versions/{version}"]
    table: list[BaseRoute] = [
        Route("/v2/health/live", live, methods=["GET"]),
        Route("/v2/health/ready", ready, methods=["GET"]),
        Route("/v2", metadata, methods=["GET"]),
        Route("/v2/repository/index", index, methods=["POST", "GET"]),
        Route("/v2/repository/models/{model}/load", repository, methods=["POST"]),
        Route("/v2/repository/models/{model}/unload", repository, methods=["POST"]),
        Route("/metrics", metrics, methods=["GET"]),
    ]
    for path in model_paths:
        table += [
            Route(path, model, methods=["GET"]),
            Route(path + "/ready", model_ready, methods=["GET"]),
            Route(path + "/config", config, methods=["GET"]),
            Route(path + "/infer", infer_route, methods=["POST"]),
        ]
    return table


async def read_body(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise TooLarge(f"request body of {declared} bytes is over the limit of {limit}")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise TooLarge(f"request body is over the limit of {limit} bytes")
        chunks.append(chunk)
    body = b"".join(chunks)
    encoding = request.headers.get("content-encoding", "").lower()
    if encoding in ("gzip", "deflate"):
        inflater = zlib.decompressobj(zlib.MAX_WBITS | (16 if encoding == "gzip" else 0))
        body = inflater.decompress(body, limit + 1)
        if len(body) > limit or inflater.unconsumed_tail:
            raise TooLarge(f"decompressed request body is over the limit of {limit} bytes")
    elif encoding not in ("", "identity"):
        raise InvalidTensor(f"unsupported Content-Encoding '{encoding}'", hint="use gzip, deflate or none")
    return body


def decode_request(body: bytes, header_length: str | None, plane: DataPlane) -> InferRequest:
    """An inference request from its JSON (or JSON + binary) body."""
    if header_length is not None:
        if not header_length.isdigit() or int(header_length) > len(body):
            raise InvalidTensor(f"{HEADER_LENGTH} {header_length!r} does not fit a body of {len(body)} bytes")
        split = int(header_length)
        header, binary = body[:split], memoryview(body)[split:]
    else:
        header, binary = body, memoryview(b"")
    try:
        doc = orjson.loads(header)
    except orjson.JSONDecodeError as exc:
        raise InvalidTensor(f"the request is not valid JSON: {exc}") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("inputs"), list):
        raise InvalidTensor("the request needs an object with a list of 'inputs'")
    inputs, position = {}, 0
    for i, spec in enumerate(doc["inputs"]):
        if not isinstance(spec, dict) or not isinstance(spec.get("name"), str):
            raise InvalidTensor(f"input {i} needs a 'name'")
        name = spec["name"]
        shape, datatype = spec.get("shape"), spec.get("datatype")
        if not isinstance(shape, list) or not all(isinstance(d, int) for d in shape) or not isinstance(datatype, str):
            raise InvalidTensor(f"input '{name}' needs a 'shape' (list of integers) and a 'datatype'")
        size = (spec.get("parameters") or {}).get("binary_data_size")
        if size is not None:
            if not isinstance(size, int) or size < 0 or position + size > len(binary):
                raise InvalidTensor(f"input '{name}': binary_data_size {size} runs past the end of the body")
            inputs[name] = from_bytes(name, datatype, shape, binary[position : position + size], plane.limits)
            position += size
        elif "data" in spec:
            inputs[name] = from_json(name, datatype, shape, spec["data"], plane.limits)
        else:
            raise InvalidTensor(f"input '{name}' has neither 'data' nor 'parameters.binary_data_size'")
    params = doc.get("parameters") or {}
    binary_all = bool(params.get("binary_data_output", False)) if isinstance(params, dict) else False
    outputs = None
    if isinstance(doc.get("outputs"), list):
        outputs = {}
        for spec in doc["outputs"]:
            if not isinstance(spec, dict) or not isinstance(spec.get("name"), str):
                raise InvalidTensor("each requested output needs a 'name'")
            flag = (spec.get("parameters") or {}).get("binary_data", binary_all)
            outputs[spec["name"]] = bool(flag)
    return InferRequest(model="", id=str(doc.get("id", "")), inputs=inputs, outputs=outputs, binary_outputs=binary_all)


def encode_answer(answer: InferAnswer) -> Response:
    """The answer as JSON, or as a JSON header and raw tensors when any output goes binary."""
    outputs, blobs = [], []
    for name, array, binary in answer.outputs:
        entry: dict[str, Any] = {"name": name, "datatype": datatype_of(array), "shape": list(array.shape)}
        if binary:
            blob = to_bytes(array)
            entry["parameters"] = {"binary_data_size": len(blob)}
            blobs.append(blob)
        else:
            entry["data"] = to_json_data(array)
        outputs.append(entry)
    doc: dict[str, Any] = {"model_name": answer.model_name, "model_version": answer.model_version, "outputs": outputs}
    if answer.id:
        doc["id"] = answer.id
    header = orjson.dumps(doc, option=orjson.OPT_SERIALIZE_NUMPY)
    if not blobs:
        return Response(header, 200, media_type="application/json")
    return Response(
        b"".join([header, *blobs]),
        200,
        media_type="application/octet-stream",
        headers={HEADER_LENGTH: str(len(header))},
    )
