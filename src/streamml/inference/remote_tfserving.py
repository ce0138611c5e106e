"""The TensorFlow Serving REST client side: ``:predict`` with columnar ``inputs``, metadata from ``/metadata``.

Columnar requests (``{"inputs": {name: values}}``) carry whole tensors, so one batch is one call, and the
answer's ``outputs`` is a mapping (or, for a one-output signature, the tensor itself). Signatures come
from ``GET /v1/models/M[/versions/V]/metadata``'s ``serving_default`` signature_def.
"""

from __future__ import annotations

from typing import Any

import httpx
import numpy as np
import orjson

from streamml.inference.remote import RemoteError
from streamml.inference.remote_v2 import send
from streamml.models.card import RemoteEndpoint
from streamml.models.signature import TensorSpec

Feed = dict[str, np.ndarray]
#: TensorFlow DataType names -> signature dtypes
TF_DTYPES = {
    "DT_FLOAT": "float32",
    "DT_DOUBLE": "float64",
    "DT_INT32": "int32",
    "DT_INT64": "int64",
    "DT_INT16": "int16",
    "DT_INT8": "int8",
    "DT_UINT8": "uint8",
    "DT_BOOL": "bool",
    "DT_STRING": "string",
    "DT_HALF": "float16",
}


class TfServingHttp:
    """TF Serving's REST API over one pooled HTTP client."""

    def __init__(self, endpoint: RemoteEndpoint) -> None:
        self.endpoint = endpoint
        self.client = httpx.Client(
            base_url=endpoint.url.rstrip("/"),
            timeout=endpoint.timeout_ms / 1000,
            limits=httpx.Limits(max_connections=16, max_keepalive_connections=8),
        )
        version = f"/versions/{endpoint.version}" if endpoint.version else ""
        self.path = f"/v1/models/{endpoint.model}{version}"
        self._outputs: list[str] | None = None

    def infer(self, feed: Feed, timeout_s: float) -> Feed:
        inputs = {name: _json_values(array) for name, array in feed.items()}
        body = orjson.dumps({"inputs": inputs}, option=orjson.OPT_SERIALIZE_NUMPY)
        reply = send(self.client, "POST", self.path + ":predict", timeout_s, content=body,
                     headers={"content-type": "application/json"})  # fmt: skip
        try:
            outputs = orjson.loads(reply.content)["outputs"]
        except (orjson.JSONDecodeError, KeyError, TypeError) as exc:
            raise RemoteError(f"unreadable predict reply: {exc}", retriable=False) from None
        if not isinstance(outputs, dict):  # a one-output signature answers with the tensor itself
            if self._outputs is None:
                self.metadata(timeout_s)
            outputs = {(self._outputs or ["output"])[0]: outputs}
        return {name: _array(values) for name, values in outputs.items()}

    def metadata(self, timeout_s: float) -> tuple[list[TensorSpec], list[TensorSpec]]:
        meta = send(self.client, "GET", self.path + "/metadata", timeout_s).json()
        try:
            signature = meta["metadata"]["signature_def"]["signature_def"]["serving_default"]
            inputs = [_spec(key, value) for key, value in signature["inputs"].items()]
            outputs = [_spec(key, value) for key, value in signature["outputs"].items()]
        except (KeyError, TypeError) as exc:
            raise RemoteError(f"metadata without a serving_default signature ({exc})", retriable=False) from None
        self._outputs = [spec.name for spec in outputs]
        return inputs, outputs

    def close(self) -> None:
        self.client.close()


def _spec(key: str, info: dict[str, Any]) -> TensorSpec:
    dtype = TF_DTYPES.get(str(info.get("dtype")))
    if dtype is None:
        raise RemoteError(f"tensor '{key}' has dtype {info.get('dtype')}, which streamml cannot feed", retriable=False)
    shape = info.get("tensor_shape") or {}
    if shape.get("unknown_rank"):
        return TensorSpec(name=key, dtype=dtype, shape=None)
    dims = [int(d.get("size", -1)) for d in shape.get("dim", [])]
    return TensorSpec(name=key, dtype=dtype, shape=[d if d >= 0 else None for d in dims])


def _json_values(array: np.ndarray) -> Any:
    if array.dtype.kind in "OUS":
        return np.vectorize(lambda v: v.decode(errors="replace") if isinstance(v, bytes) else str(v), otypes=[object])(
            array
        ).tolist()
    return array


def _array(values: Any) -> np.ndarray:
    array = np.asarray(values)
    if array.dtype.kind == "U":
        return array.astype(object)
    return array
