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
from typing import Any, TypeVar

import grpc
from google.protobuf import any_pb2
from google.protobuf.message import Message

from streamml.inference.service import Served
from streamml.inference.tensorproto import from_proto, to_proto
from streamml.inference.tensors import InvalidTensor
from streamml.inference.tfserving_protos import (
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
)
from streamml.serve import tfserving as tfs
from streamml.serve.dataplane import DataPlane
from streamml.serve.oip_grpc import guarded, serialize

T = TypeVar("T")
PREDICTION_SERVICE = "tensorflow.serving.PredictionService"
MODEL_SERVICE = "tensorflow.serving.ModelService"


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

    async def scored(
        spec: model_pb2.ModelSpec, method: str, score: Callable[[Served], Awaitable[T]]
    ) -> tuple[Served, str, T]:
        """The model ``spec`` names, the signature used and what ``score`` gives; bad input counted as a failure."""
        try:
            served = target_of(spec).resolve(plane)
            signature = tfs.check_signature(served, spec.signature_name, method)
            return served, signature, await score(served)
        except InvalidTensor:
            failed(spec.name)
            raise

    async def predict(request: predict_pb2.PredictRequest, _: grpc.aio.ServicerContext) -> predict_pb2.PredictResponse:
        async def score(served: Served) -> dict[str, Any]:
            feed = {name: from_proto(name, tensor, plane.limits) for name, tensor in request.inputs.items()}
            return await tfs.predict(plane, served, feed, list(request.output_filter))

        served, signature, outputs = await scored(request.model_spec, tfs.PREDICT_METHOD, score)
        response = predict_pb2.PredictResponse(model_spec=spec_of(served, signature))
        for name, array in outputs.items():
            response.outputs[name].CopyFrom(to_proto(array))
        return response

    async def classify(
        request: classification_pb2.ClassificationRequest, _: grpc.aio.ServicerContext
    ) -> classification_pb2.ClassificationResponse:
        served, signature, results = await scored(
            request.model_spec, tfs.CLASSIFY_METHOD, lambda s: tfs.classify(plane, s, examples_of(request.input))
        )
        response = classification_pb2.ClassificationResponse(model_spec=spec_of(served, signature))
        for example in results:
            classes = response.result.classifications.add().classes
            for label, score in example:
                classes.add(label=label, score=score)
        return response

    async def regress(
        request: regression_pb2.RegressionRequest, _: grpc.aio.ServicerContext
    ) -> regression_pb2.RegressionResponse:
        served, signature, values = await scored(
            request.model_spec, tfs.REGRESS_METHOD, lambda s: tfs.regress(plane, s, examples_of(request.input))
        )
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
