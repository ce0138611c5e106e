"""TensorFlow Serving's REST API over the data plane, so TF Serving clients and scripts work unchanged.

Routes, each for a model named alone, by ``/versions/V`` or by ``/labels/L`` (an alias):
``GET /v1/models/M`` (version status), ``GET .../metadata`` (signature defs), ``POST ...:predict`` with
``instances`` (rows) or ``inputs`` (columns), answered as ``predictions`` or ``outputs``, and ``POST
...:classify`` / ``...:regress`` with ``examples`` (and an optional ``context`` merged into each).
Binary values travel as ``{"b64": ...}``; a string output whose name ends in ``_bytes``, or that is not
UTF-8, goes back that way. Errors are ``{"error": "..."}`` with 400, 404, 413, 500 or 503.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Sequence
from typing import Any

import numpy as np
import orjson
from google.protobuf import json_format
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from streamml.inference.service import Served
from streamml.inference.tensors import InvalidTensor, check_shape
from streamml.inference.tfserving_protos import get_model_metadata_pb2
from streamml.models.signature import TensorSpec
from streamml.serve import tfserving as tfs
from streamml.serve.dataplane import DataPlane, Feed
from streamml.serve.oip_rest import error_response, json_response, read_body

READS = {"status", "metadata"}
WRITES = {"predict", "classify", "regress"}


class Malformed(Exception):
    """A path under ``/v1/models`` that names no TF Serving endpoint."""


def routes(plane: DataPlane) -> list[BaseRoute]:
    """The TF Serving REST routes over ``plane``."""

    async def endpoint(request: Request) -> Response:
        try:
            target, verb = parse_path(request.path_params["target"])
        except Malformed:
            return json_response({"error": f"Malformed request: {request.method} {request.url.path}"}, 404)
        if (request.method == "GET" and verb not in READS) or (request.method == "POST" and verb not in WRITES):
            want = "GET" if verb in READS else "POST"
            return json_response({"error": f"{request.url.path} takes {want}, not {request.method}"}, 405)
        try:
            if verb == "status":
                versions = tfs.model_status(plane, target)
                return json_response({"model_version_status": [_status(v) for v in versions]})
            served = target.resolve(plane)
            if verb == "metadata":
                return json_response(metadata(served))
            body = await read_body(request, plane.limits.max_request_bytes)
            return json_response(await _write(plane, served, verb, _document(body)))
        except Exception as exc:
            if isinstance(exc, InvalidTensor) and verb in WRITES:
                plane.service.metrics.failed(None, 1, "input", model=target.name)
            return error_response(exc)

    return [Route("/v1/models/{target:path}", endpoint, methods=["GET", "POST"])]


def parse_path(path: str) -> tuple[tfs.Target, str]:
    """``iris/versions/2:predict`` -> the model named and the verb (``status`` for a bare model path)."""
    verb = ""
    if ":" in path:
        path, verb = path.rsplit(":", 1)
        if verb not in WRITES:
            raise Malformed(verb)
    parts = path.split("/")
    if not verb and len(parts) in (2, 4) and parts[-1] == "metadata":
        parts, verb = parts[:-1], "metadata"
    if not parts[0] or len(parts) not in (1, 3) or (len(parts) == 3 and parts[1] not in ("versions", "labels")):
        raise Malformed(path)
    if len(parts) == 1:
        return tfs.Target(parts[0]), verb or "status"
    if not parts[2]:
        raise Malformed(path)
    if parts[1] == "versions":
        return tfs.Target(parts[0], version=parts[2]), verb or "status"
    return tfs.Target(parts[0], label=parts[2]), verb or "status"


def _status(version: int) -> dict[str, Any]:
    return {"version": str(version), "state": "AVAILABLE", "status": {"error_code": "OK", "error_message": ""}}


def metadata(served: Served) -> dict[str, Any]:
    """``GET .../metadata``: the model spec and its signature defs, as TF Serving writes them in JSON."""
    defs = get_model_metadata_pb2.SignatureDefMap(signature_def=tfs.signature_defs(served))
    return {
        "model_spec": {"name": served.version.name, "signature_name": "", "version": str(served.version.version)},
        "metadata": {
            tfs.SIGNATURE_DEF: json_format.MessageToDict(
                defs, preserving_proto_field_name=True, always_print_fields_with_no_presence=True
            )
        },
    }


def _document(body: bytes) -> dict[str, Any]:
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise InvalidTensor(f"the request is not valid JSON: {exc}") from None
    if not isinstance(doc, dict):
        raise InvalidTensor("the request must be a JSON object")
    return doc


async def _write(plane: DataPlane, served: Served, verb: str, doc: dict[str, Any]) -> dict[str, Any]:
    signature = doc.get("signature_name", "")
    if not isinstance(signature, str):
        raise InvalidTensor("'signature_name' must be a string")
    if verb == "predict":
        tfs.check_signature(served, signature, tfs.PREDICT_METHOD)
        rows = "instances" in doc
        if rows == ("inputs" in doc):
            raise InvalidTensor("the request needs exactly one of 'instances' (rows) and 'inputs' (columns)")
        feed = _rows(plane, served, doc["instances"]) if rows else _columns(plane, served, doc["inputs"])
        outputs = await tfs.predict(plane, served, feed)
        return _predictions(served, outputs) if rows else {"outputs": _outputs(outputs)}
    examples = _examples(doc)
    if verb == "classify":
        tfs.check_signature(served, signature, tfs.CLASSIFY_METHOD)
        results = await tfs.classify(plane, served, examples)
        return {"results": [[[label, score] for label, score in example] for example in results]}
    tfs.check_signature(served, signature, tfs.REGRESS_METHOD)
    return {"results": await tfs.regress(plane, served, examples)}


# -- predict: JSON tensors ------------------------------------------------------------------------------
def _is_b64(value: Any) -> bool:
    return isinstance(value, dict) and len(value) == 1 and "b64" in value


def _unwrap(value: Any) -> Any:
    """``value`` with every ``{"b64": ...}`` replaced by its bytes."""
    if isinstance(value, list):
        return [_unwrap(v) for v in value]
    if _is_b64(value):
        if not isinstance(value["b64"], str):
            raise InvalidTensor("a 'b64' value must be a base64 string")
        try:
            return base64.b64decode(value["b64"], validate=True)
        except (binascii.Error, ValueError):
            raise InvalidTensor(f"'{value['b64']:.40}' is not valid base64") from None
    return value


def _tensor(plane: DataPlane, served: Served, spec: TensorSpec, value: Any) -> np.ndarray:
    """A JSON value (nested lists, ``{"b64": ...}`` for bytes) as the tensor for input ``spec``."""
    value = _unwrap(value)
    try:
        array = np.array(value, dtype=object) if spec.dtype == "string" else np.asarray(value)
    except ValueError as exc:
        raise InvalidTensor(
            f"input '{spec.name}' of {served.label} is ragged: {str(exc).split('.')[0]}",
            hint="every row (instance) needs the same shape",
        ) from None
    check_shape(spec.name, array.shape, plane.limits)
    if spec.dtype == "string":
        if not all(isinstance(v, bytes | str) for v in array.reshape(-1)):
            raise InvalidTensor(f"input '{spec.name}' of {served.label} takes strings, found another value")
    elif array.dtype == object:
        raise InvalidTensor(
            f"input '{spec.name}' of {served.label} takes {spec.dtype}: found a value that is not a number"
        )
    return array


def _rows(plane: DataPlane, served: Served, instances: Any) -> Feed:
    """Row format: one value per instance for a one-input model, else an object naming every input."""
    if not isinstance(instances, list) or not instances:
        raise InvalidTensor("'instances' must be a non-empty list")
    specs = served.model.signature.inputs
    named = all(isinstance(i, dict) and not _is_b64(i) for i in instances)
    if not named:
        if len(specs) != 1:
            names = ", ".join(s.name for s in specs)
            raise InvalidTensor(f"{served.label} takes inputs [{names}]: each instance must be an object naming them")
        return {specs[0].name: _tensor(plane, served, specs[0], instances)}
    feed = {}
    for spec in specs:
        for i, instance in enumerate(instances):
            if spec.name not in instance:
                raise InvalidTensor(f"instance {i} has no input '{spec.name}' that {served.label} takes")
        feed[spec.name] = _tensor(plane, served, spec, [instance[spec.name] for instance in instances])
    return feed


def _columns(plane: DataPlane, served: Served, inputs: Any) -> Feed:
    """Columnar format: the tensor of a one-input model, or an object of tensors by input name."""
    specs = served.model.signature.inputs
    if not isinstance(inputs, dict) or _is_b64(inputs):
        if len(specs) != 1:
            names = ", ".join(s.name for s in specs)
            raise InvalidTensor(f"{served.label} takes inputs [{names}]: 'inputs' must be an object naming them")
        return {specs[0].name: _tensor(plane, served, specs[0], inputs)}
    by_name = {spec.name: spec for spec in specs}
    unknown = sorted(set(inputs) - set(by_name))
    if unknown:
        raise InvalidTensor(f"{served.label} has no input {unknown}", hint=f"its inputs: {', '.join(by_name)}")
    return {name: _tensor(plane, served, by_name[name], value) for name, value in inputs.items()}


def _json(name: str, array: np.ndarray) -> Any:
    """An output as JSON: nested lists; strings as text, or ``{"b64": ...}`` for ``*_bytes`` and non-UTF-8."""
    if array.dtype.kind not in "OUS":
        return (array.astype(np.float32) if array.dtype == np.float16 else array).tolist()
    flat = [_text(name, v) for v in array.reshape(-1)]
    return np.array(flat, dtype=object).reshape(array.shape).tolist() if array.ndim else flat[0]


def _text(name: str, value: Any) -> Any:
    raw = value if isinstance(value, bytes) else str(value).encode()
    if not name.endswith("_bytes"):
        try:
            return raw.decode()
        except UnicodeDecodeError:
            pass
    return {"b64": base64.b64encode(raw).decode()}


def _outputs(outputs: dict[str, np.ndarray]) -> Any:
    if len(outputs) == 1:
        ((name, array),) = outputs.items()
        return _json(name, array)
    return {name: _json(name, array) for name, array in outputs.items()}


def _predictions(served: Served, outputs: dict[str, np.ndarray]) -> dict[str, Any]:
    rows = {len(a) if a.ndim else 1 for a in outputs.values()}
    if len(rows) != 1 or any(a.ndim == 0 for a in outputs.values()):
        raise InvalidTensor(
            f"{served.label}'s outputs have different numbers of rows {sorted(rows)}",
            hint="use the columnar format ('inputs')",
        )
    if len(outputs) == 1:
        ((name, array),) = outputs.items()
        return {"predictions": _json(name, array)}
    columns = {name: _json(name, array) for name, array in outputs.items()}
    (count,) = rows
    return {"predictions": [{name: column[i] for name, column in columns.items()} for i in range(count)]}


# -- classify and regress: JSON examples ----------------------------------------------------------------
def _examples(doc: dict[str, Any]) -> list[dict[str, Sequence[Any]]]:
    examples, context = doc.get("examples"), doc.get("context", {})
    if not isinstance(examples, list) or not examples:
        raise InvalidTensor("the request needs a non-empty list of 'examples'")
    if not isinstance(context, dict):
        raise InvalidTensor("'context' must be an object of features")
    shared = _features(context, "context")
    decoded = []
    for i, example in enumerate(examples):
        if not isinstance(example, dict):
            raise InvalidTensor(f"example {i} must be an object of features")
        decoded.append({**shared, **_features(example, f"example {i}")})
    return decoded


def _features(features: dict[str, Any], where: str) -> dict[str, Sequence[Any]]:
    """JSON features (a value or a list of values each) as lists of numbers, text or bytes."""
    out: dict[str, Sequence[Any]] = {}
    for name, value in features.items():
        values = value if isinstance(value, list) else [value]
        decoded = []
        for raw in values:
            item = _unwrap(raw) if _is_b64(raw) else raw
            if isinstance(item, bool) or not isinstance(item, int | float | str | bytes):
                raise InvalidTensor(f"feature '{name}' of {where}: {item!r:.40} is not a number, string or b64 value")
            decoded.append(item)
        out[name] = decoded
    return out
