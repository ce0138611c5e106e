"""Open Inference Protocol v2 over gRPC: ``inference.GRPCInferenceService``.

The message types are the protocol's own, as the ``tritonclient`` package ships them, so any OIP v2 client
talks to this service unchanged. Implemented: ServerLive, ServerReady, ModelReady, ServerMetadata,
ModelMetadata, ModelConfig (Triton's), ModelInfer, ModelStreamInfer (each request of a stream answered as it completes),
RepositoryIndex, RepositoryModelLoad and RepositoryModelUnload; every other method of the service answers
UNIMPLEMENTED. Inputs come as ``raw_input_contents`` or typed ``contents``; outputs always go in
``raw_output_contents`` (the only place tritonclient reads them). Errors are gRPC status codes with the
message (in a stream, the response's ``error_message``).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc
from google.protobuf import json_format
from tritonclient.grpc import model_config_pb2 as mc
from tritonclient.grpc import service_pb2 as pb

from streamml.errors import ModelError
from streamml.inference.tensors import CONTENTS_FIELDS, InvalidTensor, datatype_of, from_bytes, from_json, to_bytes
from streamml.serve.dataplane import DataPlane, ModelNotFound, NotReady
from streamml.serve.oip import InferRequest, infer, model_config, model_metadata, repository_index, server_metadata

log = logging.getLogger(__name__)

SERVICE = "inference.GRPCInferenceService"


def status_of(exc: Exception) -> grpc.StatusCode:
    if isinstance(exc, ModelNotFound):
        return grpc.StatusCode.NOT_FOUND
    if isinstance(exc, NotReady):
        return grpc.StatusCode.UNAVAILABLE
    if isinstance(exc, InvalidTensor):
        return grpc.StatusCode.INVALID_ARGUMENT
    return grpc.StatusCode.INTERNAL


def handler(plane: DataPlane) -> grpc.GenericRpcHandler:
    """The service's method handlers over ``plane``."""

    async def server_live(_: pb.ServerLiveRequest, __: grpc.aio.ServicerContext) -> pb.ServerLiveResponse:
        return pb.ServerLiveResponse(live=True)

    async def server_ready(_: pb.ServerReadyRequest, __: grpc.aio.ServicerContext) -> pb.ServerReadyResponse:
        return pb.ServerReadyResponse(ready=plane.ready and not plane.draining)

    async def model_ready(request: pb.ModelReadyRequest, _: grpc.aio.ServicerContext) -> pb.ModelReadyResponse:
        try:
            plane.resolve(request.name, request.version or None)
        except (ModelNotFound, NotReady):
            return pb.ModelReadyResponse(ready=False)
        return pb.ModelReadyResponse(ready=True)

    async def server_meta(_: pb.ServerMetadataRequest, __: grpc.aio.ServicerContext) -> pb.ServerMetadataResponse:
        return pb.ServerMetadataResponse(**server_metadata(plane))

    async def model_meta(request: pb.ModelMetadataRequest, _: grpc.aio.ServicerContext) -> pb.ModelMetadataResponse:
        meta = model_metadata(plane, plane.resolve(request.name, request.version or None))
        tensors = {
            key: [pb.ModelMetadataResponse.TensorMetadata(**t) for t in meta[key]] for key in ("inputs", "outputs")
        }
        return pb.ModelMetadataResponse(
            name=meta["name"], versions=meta["versions"], platform=meta["platform"], **tensors
        )

    async def config(request: pb.ModelConfigRequest, _: grpc.aio.ServicerContext) -> pb.ModelConfigResponse:
        served = plane.resolve(request.name, request.version or None)
        return pb.ModelConfigResponse(config=json_format.ParseDict(model_config(plane, served), mc.ModelConfig()))

    async def index(_: pb.RepositoryIndexRequest, __: grpc.aio.ServicerContext) -> pb.RepositoryIndexResponse:
        models = [pb.RepositoryIndexResponse.ModelIndex(**entry) for entry in repository_index(plane)]
        return pb.RepositoryIndexResponse(models=models)

    async def repository_load(
        request: pb.RepositoryModelLoadRequest, _: grpc.aio.ServicerContext
    ) -> pb.RepositoryModelLoadResponse:
        if set(request.parameters) - {"unload_dependents"}:
            raise InvalidTensor(
                "loading with a config or file override is not supported: models come from the registry"
            )
        await plane.load_model(request.model_name)
        return pb.RepositoryModelLoadResponse()

    async def repository_unload(
        request: pb.RepositoryModelUnloadRequest, _: grpc.aio.ServicerContext
    ) -> pb.RepositoryModelUnloadResponse:
        plane.unload_model(request.model_name)
        return pb.RepositoryModelUnloadResponse()

    async def model_infer(request: pb.ModelInferRequest, _: grpc.aio.ServicerContext) -> pb.ModelInferResponse:
        return await answer(request)

    async def model_stream_infer(
        requests: AsyncIterator[pb.ModelInferRequest], _: grpc.aio.ServicerContext
    ) -> AsyncIterator[pb.ModelStreamInferResponse]:
        """Every request of the stream answered as soon as it is scored, so requests in flight together share
        batches; a failed request answers with its ``error_message`` and the stream goes on."""
        results: asyncio.Queue[pb.ModelStreamInferResponse | None] = asyncio.Queue()
        pending: set[asyncio.Task[None]] = set()

        async def one(request: pb.ModelInferRequest) -> None:
            try:
                results.put_nowait(pb.ModelStreamInferResponse(infer_response=await answer(request)))
            except Exception as exc:
                failed = pb.ModelInferResponse(id=request.id, model_name=request.model_name)
                results.put_nowait(pb.ModelStreamInferResponse(error_message=_message(exc), infer_response=failed))

        async def read() -> None:
            try:
                async for request in requests:
                    task = asyncio.create_task(one(request))
                    pending.add(task)
                    task.add_done_callback(pending.discard)
                if pending:
                    await asyncio.wait(set(pending))
            finally:
                results.put_nowait(None)

        reader = asyncio.create_task(read())
        try:
            while (item := await results.get()) is not None:
                yield item
        finally:
            reader.cancel()

    async def answer(request: pb.ModelInferRequest) -> pb.ModelInferResponse:
        try:
            decoded = decode_request(request, plane)
        except InvalidTensor:
            plane.service.metrics.failed(None, 1, "input", model=request.model_name)
            raise
        answer = await infer(plane, decoded)
        response = pb.ModelInferResponse(model_name=answer.model_name, model_version=answer.model_version, id=answer.id)
        for name, array, _binary in answer.outputs:
            response.outputs.add(name=name, datatype=datatype_of(array), shape=list(array.shape))
            response.raw_output_contents.append(to_bytes(array))
        return response

    methods: dict[str, tuple[Callable[[Any, grpc.aio.ServicerContext], Awaitable[Any]], Any]] = {
        "ServerLive": (server_live, pb.ServerLiveRequest),
        "ServerReady": (server_ready, pb.ServerReadyRequest),
        "ModelReady": (model_ready, pb.ModelReadyRequest),
        "ServerMetadata": (server_meta, pb.ServerMetadataRequest),
        "ModelMetadata": (model_meta, pb.ModelMetadataRequest),
        "ModelConfig": (config, pb.ModelConfigRequest),
        "ModelInfer": (model_infer, pb.ModelInferRequest),
        "RepositoryIndex": (index, pb.RepositoryIndexRequest),
        "RepositoryModelLoad": (repository_load, pb.RepositoryModelLoadRequest),
        "RepositoryModelUnload": (repository_unload, pb.RepositoryModelUnloadRequest),
    }
    handlers: dict[str, grpc.RpcMethodHandler] = {
        name: grpc.unary_unary_rpc_method_handler(
            guarded(fn), request_deserializer=message.FromString, response_serializer=serialize
        )
        for name, (fn, message) in methods.items()
    }
    handlers["ModelStreamInfer"] = grpc.stream_stream_rpc_method_handler(
        model_stream_infer, request_deserializer=pb.ModelInferRequest.FromString, response_serializer=serialize
    )
    return grpc.method_handlers_generic_handler(SERVICE, handlers)


def _message(exc: Exception) -> str:
    """What a client is told of ``exc``: our errors' own message, never a traceback."""
    if isinstance(exc, InvalidTensor | ModelNotFound | NotReady | ModelError):
        return str(exc)
    log.exception("internal error in a stream")
    return f"internal error: {type(exc).__name__}"


def serialize(message: Any) -> bytes:
    return bytes(message.SerializeToString())


def guarded(
    fn: Callable[[Any, grpc.aio.ServicerContext], Awaitable[Any]],
) -> Callable[[Any, grpc.aio.ServicerContext], Awaitable[Any]]:
    """``fn`` with our errors answered as gRPC status codes."""

    async def call(request: Any, context: grpc.aio.ServicerContext) -> Any:
        try:
            return await fn(request, context)
        except (InvalidTensor, ModelNotFound, NotReady, ModelError) as exc:
            await context.abort(status_of(exc), str(exc))
        except Exception as exc:  # never a traceback to the client
            log.exception("internal error in %s", getattr(fn, "__name__", "a method"))
            await context.abort(grpc.StatusCode.INTERNAL, f"internal error: {type(exc).__name__}")

    return call


def decode_request(request: pb.ModelInferRequest, plane: DataPlane) -> InferRequest:
    """An :class:`InferRequest` from the gRPC message (raw or typed contents)."""
    raw = list(request.raw_input_contents)
    if raw and len(raw) != len(request.inputs):
        raise InvalidTensor(f"{len(request.inputs)} inputs but {len(raw)} raw_input_contents")
    inputs = {}
    for i, tensor in enumerate(request.inputs):
        shape = list(tensor.shape)
        if raw:
            inputs[tensor.name] = from_bytes(tensor.name, tensor.datatype, shape, raw[i], plane.limits)
            continue
        field = CONTENTS_FIELDS.get(tensor.datatype.upper())
        if field is None:
            raise InvalidTensor(f"input '{tensor.name}': {tensor.datatype} needs raw_input_contents")
        inputs[tensor.name] = from_json(
            tensor.name, tensor.datatype, shape, list(getattr(tensor.contents, field)), plane.limits
        )
    outputs = {out.name: True for out in request.outputs} or None
    return InferRequest(
        model=request.model_name, version=request.model_version, id=request.id, inputs=inputs, outputs=outputs
    )
