"""The TensorFlow Serving client side: ``Predict`` over gRPC, ``:predict`` over REST, signatures from metadata.

gRPC sends ``PredictRequest`` with numbers as raw ``tensor_content``; REST sends columnar requests
(``{"inputs": {name: values}}``), whole tensors, whose answer's ``outputs`` is a mapping (or, for a
one-output signature, the tensor itself). Either way one batch is one call. Signatures come from the
``serving_default`` signature_def of ``GetModelMetadata`` (``GET /v1/models/M[/versions/V]/metadata``).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import orjson

from streamml.inference.remote import REPLY_LIMITS, RemoteError, decoded
from streamml.inference.remote_v2 import GrpcChannel, http_client, send
from streamml.inference.tensorproto import TYPES, from_proto, to_proto
from streamml.inference.tfserving_protos import get_model_metadata_pb2, predict_pb2, types_pb2
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
        self.client, model = http_client(endpoint)
        self.path = f"/v1/models/{model}"
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
            # a signature_def's tensors are a protobuf map, in no order: names sorted, as over gRPC
            inputs = [_spec(key, signature["inputs"][key]) for key in sorted(signature["inputs"])]
            outputs = [_spec(key, signature["outputs"][key]) for key in sorted(signature["outputs"])]
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


class TfServingGrpc:
    """``tensorflow.serving.PredictionService`` over one channel."""

    def __init__(self, endpoint: RemoteEndpoint) -> None:
        self.endpoint = endpoint
        self.channel = GrpcChannel(endpoint.url)
        service = "/tensorflow.serving.PredictionService/"
        self._predict = self.channel.method(
            service + "Predict", predict_pb2.PredictRequest, predict_pb2.PredictResponse
        )
        self._metadata = self.channel.method(
            service + "GetModelMetadata",
            get_model_metadata_pb2.GetModelMetadataRequest,
            get_model_metadata_pb2.GetModelMetadataResponse,
        )

    def _spec(self, spec: Any) -> None:
        spec.name = self.endpoint.model
        version = self.endpoint.version
        if version.isdigit():
            spec.version.value = int(version)
        elif version:
            spec.version_label = version

    def infer(self, feed: Feed, timeout_s: float) -> Feed:
        request = predict_pb2.PredictRequest()
        self._spec(request.model_spec)
        for name, array in feed.items():
            request.inputs[name].CopyFrom(to_proto(array, content=True))
        reply = self._predict(request, timeout_s)
        try:
            return {
                name: decoded(from_proto(name, reply.outputs[name], REPLY_LIMITS)) for name in sorted(reply.outputs)
            }
        except ValueError as exc:
            raise RemoteError(f"unreadable predict reply: {exc}", retriable=False) from None

    def metadata(self, timeout_s: float) -> tuple[list[TensorSpec], list[TensorSpec]]:
        request = get_model_metadata_pb2.GetModelMetadataRequest(metadata_field=["signature_def"])
        self._spec(request.model_spec)
        reply = self._metadata(request, timeout_s)
        signatures = get_model_metadata_pb2.SignatureDefMap()
        if "signature_def" not in reply.metadata or not reply.metadata["signature_def"].Unpack(signatures):
            raise RemoteError("metadata without signature_def", retriable=False)
        if "serving_default" not in signatures.signature_def:
            raise RemoteError(f"no serving_default signature (has {sorted(signatures.signature_def)})", retriable=False)
        signature = signatures.signature_def["serving_default"]
        # protobuf maps keep no order: names sorted, so the signature reads the same on every call
        return (
            [_info(k, signature.inputs[k]) for k in sorted(signature.inputs)],
            [_info(k, signature.outputs[k]) for k in sorted(signature.outputs)],
        )

    def close(self) -> None:
        self.channel.close()


def _info(key: str, info: Any) -> TensorSpec:
    kind = TYPES.get(info.dtype)
    if kind is None:
        name = types_pb2.DataType.Name(info.dtype)
        raise RemoteError(f"tensor '{key}' has dtype {name}, which streamml cannot feed", retriable=False)
    dtype = "string" if info.dtype == types_pb2.DT_STRING else kind[0].name
    if info.tensor_shape.unknown_rank:
        return TensorSpec(name=key, dtype=dtype, shape=None)
    return TensorSpec(name=key, dtype=dtype, shape=[d.size if d.size >= 0 else None for d in info.tensor_shape.dim])
