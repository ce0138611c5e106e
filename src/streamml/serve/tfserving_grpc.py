"""TensorFlow Serving's gRPC services over the data plane, with TF Serving's own message types.

``tensorflow.serving.PredictionService``: Predict, Classify, Regress and GetModelMetadata (MultiInference
answers UNIMPLEMENTED); ``tensorflow.serving.ModelService``: GetModelStatus (HandleReloadConfigRequest
answers UNIMPLEMENTED: models come from the registry). A request names its model by ``model_spec`` (name, and
``version`` or ``version_label``, an alias); every answer's ``model_spec`` names the version that answered.
Tensors convert between ``TensorProto`` (``tensor_content`` or the typed ``*_val`` fields, ``string_val``
for strings; one typed value fills a whole shape, as in TensorFlow) and NumPy; answers use the typed fields.
Errors are gRPC status codes as :func:`~streamml.serve.oip_grpc.status_of` maps them.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import grpc
import numpy as np
from google.protobuf import any_pb2
from google.protobuf.message import Message

from streamml.inference.service import Served
from streamml.inference.tensors import InvalidTensor, Limits, check_shape
from streamml.serve import tfserving as tfs
from streamml.serve.dataplane import DataPlane
from streamml.serve.oip_grpc import guarded, serialize
from streamml.serve.tfserving_protos import (
    classification_pb2,
    example_pb2,
    get_model_metadata_pb2,
    get_model_status_pb2,
    inference_pb2,
    input_pb2,
    model_management_pb2,
    model_pb2,
    predict_pb2,
    regression_pb2,
    tensor_pb2,
    types_pb2,
)

PREDICTION_SERVICE = "tensorflow.serving.PredictionService"
MODEL_SERVICE = "tensorflow.serving.ModelService"

#: TensorFlow DataType -> (NumPy dtype, the typed field of TensorProto that carries it)
_TYPES: dict[int, tuple[np.dtype[Any], str]] = {
    types_pb2.DT_FLOAT: (np.dtype("<f4"), "float_val"),
    types_pb2.DT_DOUBLE: (np.dtype("<f8"), "double_val"),
    types_pb2.DT_HALF: (np.dtype("<f2"), "half_val"),
    types_pb2.DT_INT8: (np.dtype("<i1"), "int_val"),
    types_pb2.DT_INT16: (np.dtype("<i2"), "int_val"),
    types_pb2.DT_INT32: (np.dtype("<i4"), "int_val"),
    types_pb2.DT_INT64: (np.dtype("<i8"), "int64_val"),
    types_pb2.DT_UINT8: (np.dtype("<u1"), "int_val"),
    types_pb2.DT_UINT16: (np.dtype("<u2"), "int_val"),
    types_pb2.DT_UINT32: (np.dtype("<u4"), "uint32_val"),
    types_pb2.DT_UINT64: (np.dtype("<u8"), "uint64_val"),
    types_pb2.DT_BOOL: (np.dtype(np.bool_), "bool_val"),
    types_pb2.DT_STRING: (np.dtype(object), "string_val"),
}
_BY_DTYPE = {dtype.str: code for code, (dtype, _) in _TYPES.items() if code != types_pb2.DT_STRING}


# -- tensors --------------------------------------------------------------------------------------------
def from_proto(name: str, proto: tensor_pb2.TensorProto, limits: Limits) -> np.ndarray:
    """A NumPy array from a ``TensorProto``, checked against its declared dtype, shape and the limits."""
    kind = _TYPES.get(proto.dtype)
    if kind is None:
        raise InvalidTensor(f"input '{name}': unsupported dtype {types_pb2.DataType.Name(proto.dtype)}")
    dtype, field = kind
    if proto.tensor_shape.unknown_rank:
        raise InvalidTensor(f"input '{name}' needs a known shape")
    shape = [int(d.size) for d in proto.tensor_shape.dim]
    count = check_shape(name, shape, limits)
    described = f"input '{name}': {types_pb2.DataType.Name(proto.dtype)} of shape {shape}"
    if proto.tensor_content:
        if dtype.kind == "O":
            raise InvalidTensor(f"{described} must use string_val, not tensor_content")
        if len(proto.tensor_content) != count * dtype.itemsize:
            raise InvalidTensor(f"{described} needs {count * dtype.itemsize} bytes, tensor_content has "
                                f"{len(proto.tensor_content)}")  # fmt: skip
        return np.frombuffer(proto.tensor_content, dtype=dtype).reshape(shape)
    values = getattr(proto, field)
    if len(values) not in (count, 1) or (len(values) == 1 and count == 0):
        raise InvalidTensor(f"{described} needs {count} values in {field} (or tensor_content), got {len(values)}")
    if dtype.kind == "O":
        array = np.empty(len(values), dtype=object)
        array[:] = list(values)
    elif field == "half_val":
        array = np.asarray(values, dtype=np.uint16).view(np.float16)
    else:
        array = np.asarray(values, dtype=dtype)
    if len(values) != count:  # one value fills the shape, as TensorFlow does
        return np.full(shape, array[0], dtype=array.dtype)
    return array.reshape(shape)


def to_proto(array: np.ndarray) -> tensor_pb2.TensorProto:
    """A ``TensorProto`` with the typed fields (``string_val`` for strings) for a NumPy array."""
    proto = tensor_pb2.TensorProto()
    for dim in array.shape:
        proto.tensor_shape.dim.add(size=int(dim))
    flat = array.reshape(-1)
    if array.dtype.kind in "OUS":
        proto.dtype = types_pb2.DT_STRING
        proto.string_val.extend(v if isinstance(v, bytes) else str(v).encode() for v in flat)
        return proto
    code = _BY_DTYPE.get(array.dtype.newbyteorder("<").str if array.dtype.byteorder == ">" else array.dtype.str)
    if code is None:
        raise InvalidTensor(f"no TensorFlow dtype for an output of {array.dtype}")
    proto.dtype = code
    _, field = _TYPES[code]
    values = flat.view(np.uint16).astype(np.int32) if field == "half_val" else flat
    getattr(proto, field).extend(values.tolist())
    return proto


# -- requests -------------------------------------------------------------------------------------------
def target_of(spec: model_pb2.ModelSpec) -> tfs.Target:
    """The model a ``ModelSpec`` names (``version`` or ``version_label``)."""
    if not spec.name:
        raise InvalidTensor("model_spec.name is empty")
    version = str(spec.version.value) if spec.HasField("version") else None
    label = spec.version_label if spec.HasField("version_label") else None
    return tfs.Target(spec.name, version or None, label or None)


def spec_of(served: Served, signature: str = "") -> model_pb2.ModelSpec:
    spec = model_pb2.ModelSpec(name=served.version.name, signature_name=signature)
    spec.version.value = served.version.version
    return spec


def examples_of(request_input: input_pb2.Input) -> list[dict[str, list[Any]]]:
    """The examples of an ``Input`` (a list, or a list with a context merged into each) as feature values."""
    which = request_input.WhichOneof("kind")
    if which == "example_list":
        examples, context = request_input.example_list.examples, None
    elif which == "example_list_with_context":
        examples = request_input.example_list_with_context.examples
        context = request_input.example_list_with_context.context
    else:
        raise InvalidTensor("the request has no input examples (example_list or example_list_with_context)")
    shared = _features(context) if context is not None else {}
    return [{**shared, **_features(example)} for example in examples]


def _features(example: example_pb2.Example) -> dict[str, list[Any]]:
    out: dict[str, list[Any]] = {}
    for name, feature in example.features.feature.items():
        kind = feature.WhichOneof("kind")
        out[name] = list(getattr(feature, kind).value) if kind else []
    return out


def handlers(plane: DataPlane) -> list[grpc.GenericRpcHandler]:
    """The PredictionService and ModelService handlers over ``plane``."""

    def failed(model: str) -> None:
        plane.service.metrics.failed(None, 1, "input", model=model)

    async def predict(request: predict_pb2.PredictRequest, _: grpc.aio.ServicerContext) -> predict_pb2.PredictResponse:
        try:
            served = target_of(request.model_spec).resolve(plane)
            signature = tfs.check_signature(served, request.model_spec.signature_name, tfs.PREDICT_METHOD)
            feed = {name: from_proto(name, tensor, plane.limits) for name, tensor in request.inputs.items()}
            outputs = await tfs.predict(plane, served, feed, list(request.output_filter))
        except InvalidTensor:
            failed(request.model_spec.name)
            raise
        response = predict_pb2.PredictResponse(model_spec=spec_of(served, signature))
        for name, array in outputs.items():
            response.outputs[name].CopyFrom(to_proto(array))
        return response

    async def classify(
        request: classification_pb2.ClassificationRequest, _: grpc.aio.ServicerContext
    ) -> classification_pb2.ClassificationResponse:
        try:
            served = target_of(request.model_spec).resolve(plane)
            signature = tfs.check_signature(served, request.model_spec.signature_name, tfs.CLASSIFY_METHOD)
            results = await tfs.classify(plane, served, examples_of(request.input))
        except InvalidTensor:
            failed(request.model_spec.name)
            raise
        response = classification_pb2.ClassificationResponse(model_spec=spec_of(served, signature))
        for example in results:
            classes = response.result.classifications.add().classes
            for label, score in example:
                classes.add(label=label, score=score)
        return response

    async def regress(
        request: regression_pb2.RegressionRequest, _: grpc.aio.ServicerContext
    ) -> regression_pb2.RegressionResponse:
        try:
            served = target_of(request.model_spec).resolve(plane)
            signature = tfs.check_signature(served, request.model_spec.signature_name, tfs.REGRESS_METHOD)
            values = await tfs.regress(plane, served, examples_of(request.input))
        except InvalidTensor:
            failed(request.model_spec.name)
            raise
        response = regression_pb2.RegressionResponse(model_spec=spec_of(served, signature))
        for value in values:
            response.result.regressions.add(value=value)
        return response

    async def metadata(
        request: get_model_metadata_pb2.GetModelMetadataRequest, _: grpc.aio.ServicerContext
    ) -> get_model_metadata_pb2.GetModelMetadataResponse:
        fields = list(request.metadata_field)
        if not fields:
            raise InvalidTensor(f"GetModelMetadataRequest must name a metadata_field ('{tfs.SIGNATURE_DEF}')")
        unsupported = [f for f in fields if f != tfs.SIGNATURE_DEF]
        if unsupported:
            raise InvalidTensor(f"metadata field {unsupported} is not supported", hint=f"ask for '{tfs.SIGNATURE_DEF}'")
        served = target_of(request.model_spec).resolve(plane)
        packed = any_pb2.Any()
        packed.Pack(get_model_metadata_pb2.SignatureDefMap(signature_def=tfs.signature_defs(served)))
        response = get_model_metadata_pb2.GetModelMetadataResponse(model_spec=spec_of(served))
        response.metadata[tfs.SIGNATURE_DEF].CopyFrom(packed)
        return response

    async def status(
        request: get_model_status_pb2.GetModelStatusRequest, _: grpc.aio.ServicerContext
    ) -> get_model_status_pb2.GetModelStatusResponse:
        response = get_model_status_pb2.GetModelStatusResponse()
        for version in tfs.model_status(plane, target_of(request.model_spec)):
            entry = response.model_version_status.add(version=version)
            entry.state = get_model_status_pb2.ModelVersionStatus.AVAILABLE
        return response

    prediction = {
        "Predict": (predict, predict_pb2.PredictRequest),
        "Classify": (classify, classification_pb2.ClassificationRequest),
        "Regress": (regress, regression_pb2.RegressionRequest),
        "GetModelMetadata": (metadata, get_model_metadata_pb2.GetModelMetadataRequest),
    }
    unimplemented_prediction = {"MultiInference": inference_pb2.MultiInferenceRequest}
    unimplemented_model = {"HandleReloadConfigRequest": model_management_pb2.ReloadConfigRequest}
    return [
        _service(PREDICTION_SERVICE, prediction, unimplemented_prediction),
        _service(MODEL_SERVICE, {"GetModelStatus": (status, get_model_status_pb2.GetModelStatusRequest)},
                 unimplemented_model),
    ]  # fmt: skip


Method = Callable[[Any, grpc.aio.ServicerContext], Awaitable[Any]]


def _service(
    name: str, methods: Mapping[str, tuple[Method, type[Message]]], absent: Mapping[str, type[Message]]
) -> grpc.GenericRpcHandler:
    table = {
        method: grpc.unary_unary_rpc_method_handler(
            guarded(fn), request_deserializer=message.FromString, response_serializer=serialize
        )
        for method, (fn, message) in methods.items()
    }
    for method, message in absent.items():
        table[method] = grpc.unary_unary_rpc_method_handler(
            _unimplemented(f"{name}/{method}"), request_deserializer=message.FromString, response_serializer=serialize
        )
    return grpc.method_handlers_generic_handler(name, table)


def _unimplemented(method: str) -> Method:
    async def call(_: Any, context: grpc.aio.ServicerContext) -> Any:
        await context.abort(grpc.StatusCode.UNIMPLEMENTED, f"{method} is not supported by this server")

    return call
