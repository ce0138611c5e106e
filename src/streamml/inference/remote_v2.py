"""The Open Inference Protocol (v2) client side: gRPC with raw tensors, REST with JSON.

gRPC sends ``raw_input_contents`` (what Triton and streamml serve read fastest) and reads outputs raw or
typed, whichever the server sends. REST sends plain JSON tensors, which every OIP server accepts (some do
not implement the binary extension), and reads JSON or binary outputs. Both keep one connection pool for
the life of the model and map failures to :class:`~streamml.inference.remote.RemoteError`: unreachable,
timed out, overloaded or shutting down is retriable; a refused request (bad input, unknown model) is not.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import grpc
import httpx
import numpy as np
import orjson
from tritonclient.grpc import service_pb2 as pb

from streamml.inference.remote import REPLY_LIMITS, RemoteError, decoded, tensor_spec, wire_array
from streamml.inference.tensors import (
    CONTENTS_FIELDS,
    InvalidTensor,
    datatype_of,
    from_bytes,
    from_json,
    to_json_data,
)
from streamml.models.card import RemoteEndpoint
from streamml.models.signature import TensorSpec

Feed = dict[str, np.ndarray]
_RETRIABLE_CODES = {
    grpc.StatusCode.UNAVAILABLE,
    grpc.StatusCode.DEADLINE_EXCEEDED,
    grpc.StatusCode.RESOURCE_EXHAUSTED,
    grpc.StatusCode.ABORTED,
}
#: HTTP statuses worth another try: overloaded, a proxy without its backend, starting or draining
RETRIABLE_STATUS = {429, 502, 503, 504}
_HEADER_LENGTH = "inference-header-content-length"


class GrpcChannel:
    """One long-lived gRPC channel that finds a restarted server again within a second, its calls waiting for
    a connection within their timeout; failures as :class:`RemoteError` (retriable by status code)."""

    def __init__(self, url: str) -> None:
        self.channel = grpc.insecure_channel(
            url.removeprefix("grpc://"),
            options=[("grpc.max_receive_message_length", -1), ("grpc.max_send_message_length", -1),
                     ("grpc.keepalive_time_ms", 30_000), ("grpc.enable_retries", 0),
                     # a restarted server is found again within a second, not after gRPC's default 2-minute backoff
                     ("grpc.initial_reconnect_backoff_ms", 100), ("grpc.min_reconnect_backoff_ms", 100),
                     ("grpc.max_reconnect_backoff_ms", 1000)],
        )  # fmt: skip
        self.state = grpc.ChannelConnectivity.IDLE
        self.channel.subscribe(self._track, try_to_connect=False)

    def method(self, path: str, request: Any, response: Any) -> Callable[[Any, float], Any]:
        """A unary method: ``call(message, timeout_s)`` returns the reply or raises :class:`RemoteError`."""
        stub = self.channel.unary_unary(
            path, request_serializer=request.SerializeToString, response_deserializer=response.FromString
        )

        def call(message: Any, timeout_s: float) -> Any:
            try:
                return stub(message, timeout=timeout_s, wait_for_ready=True)  # a reconnect counts in the timeout
            except grpc.RpcError as exc:
                raise self._error(exc, timeout_s) from None

        return call

    def close(self) -> None:
        self.channel.unsubscribe(self._track)
        self.channel.close()

    def _track(self, state: grpc.ChannelConnectivity) -> None:
        self.state = state

    def _error(self, exc: grpc.RpcError, timeout_s: float) -> RemoteError:
        code = exc.code() if hasattr(exc, "code") else grpc.StatusCode.UNKNOWN
        details = exc.details() if hasattr(exc, "details") else str(exc)
        if code == grpc.StatusCode.DEADLINE_EXCEEDED and self.state != grpc.ChannelConnectivity.READY:
            details = f"cannot reach the server: not connected within {timeout_s * 1000:.0f} ms ({self.state.name})"
        return RemoteError(f"{code.name}: {details}", retriable=code in _RETRIABLE_CODES)


class V2Grpc:
    """``inference.GRPCInferenceService`` over one channel."""

    def __init__(self, endpoint: RemoteEndpoint) -> None:
        self.endpoint = endpoint
        self.channel = GrpcChannel(endpoint.url)
        service = "/inference.GRPCInferenceService/"
        self._infer = self.channel.method(service + "ModelInfer", pb.ModelInferRequest, pb.ModelInferResponse)
        self._metadata = self.channel.method(
            service + "ModelMetadata", pb.ModelMetadataRequest, pb.ModelMetadataResponse
        )

    def infer(self, feed: Feed, timeout_s: float) -> Feed:
        e = self.endpoint
        request = pb.ModelInferRequest(model_name=e.model, model_version=e.version)
        for name, array in feed.items():
            datatype, raw = wire_array(array)
            request.inputs.add(name=name, datatype=datatype, shape=list(array.shape))
            request.raw_input_contents.append(raw)
        reply = self._infer(request, timeout_s)
        raw_outputs = list(reply.raw_output_contents)
        outputs = {}
        for i, out in enumerate(reply.outputs):
            shape = list(out.shape)
            if raw_outputs:
                array = from_bytes(out.name, out.datatype, shape, raw_outputs[i], REPLY_LIMITS)
            else:
                values = list(getattr(out.contents, CONTENTS_FIELDS.get(out.datatype.upper(), "bytes_contents")))
                array = from_json(out.name, out.datatype, shape, values, REPLY_LIMITS)
            outputs[out.name] = decoded(array)
        return outputs

    def metadata(self, timeout_s: float) -> tuple[list[TensorSpec], list[TensorSpec]]:
        meta = self._metadata(
            pb.ModelMetadataRequest(name=self.endpoint.model, version=self.endpoint.version), timeout_s
        )
        return (
            [tensor_spec(t.name, t.datatype, list(t.shape)) for t in meta.inputs],
            [tensor_spec(t.name, t.datatype, list(t.shape)) for t in meta.outputs],
        )

    def close(self) -> None:
        self.channel.close()


def http_client(endpoint: RemoteEndpoint) -> tuple[httpx.Client, str]:
    """A pooled, kept-alive client for ``endpoint`` and the path suffix naming its model version."""
    client = httpx.Client(
        base_url=endpoint.url.rstrip("/"),
        timeout=endpoint.timeout_ms / 1000,
        limits=httpx.Limits(max_connections=16, max_keepalive_connections=8),
    )
    return client, f"{endpoint.model}/versions/{endpoint.version}" if endpoint.version else endpoint.model


class V2Http:
    """OIP v2 REST over one pooled HTTP client."""

    def __init__(self, endpoint: RemoteEndpoint) -> None:
        self.endpoint = endpoint
        self.client, model = http_client(endpoint)
        self.path = f"/v2/models/{model}"

    def infer(self, feed: Feed, timeout_s: float) -> Feed:
        inputs = [
            {"name": name, "shape": list(a.shape), "datatype": datatype_of(a), "data": to_json_data(a)}
            for name, a in feed.items()
        ]
        body = orjson.dumps({"inputs": inputs}, option=orjson.OPT_SERIALIZE_NUMPY)
        reply = send(self.client, "POST", self.path + "/infer", timeout_s, content=body,
                     headers={"content-type": "application/json"})  # fmt: skip
        return parse_infer_reply(reply)

    def metadata(self, timeout_s: float) -> tuple[list[TensorSpec], list[TensorSpec]]:
        meta = send(self.client, "GET", self.path, timeout_s).json()
        try:
            return (
                [tensor_spec(t["name"], t["datatype"], t.get("shape")) for t in meta["inputs"]],
                [tensor_spec(t["name"], t["datatype"], t.get("shape")) for t in meta["outputs"]],
            )
        except (KeyError, TypeError) as exc:
            raise RemoteError(f"model metadata without {exc}", retriable=False) from None

    def close(self) -> None:
        self.client.close()


def send(client: httpx.Client, method: str, path: str, timeout_s: float, **kwargs: Any) -> httpx.Response:
    """One HTTP call with failures as :class:`RemoteError` (the server's ``{"error"}`` text when it has one)."""
    try:
        reply = client.request(method, path, timeout=timeout_s, **kwargs)
    except httpx.TimeoutException:
        raise RemoteError(f"no answer within {timeout_s * 1000:.0f} ms", retriable=True) from None
    except httpx.TransportError as exc:
        raise RemoteError(f"cannot reach the server: {exc or type(exc).__name__}", retriable=True) from None
    if reply.status_code != 200:
        try:
            message = str(reply.json().get("error") or reply.text)
        except ValueError:
            message = reply.text[:300]
        raise RemoteError(f"HTTP {reply.status_code}: {message}", retriable=reply.status_code in RETRIABLE_STATUS)
    return reply


def parse_infer_reply(reply: httpx.Response) -> Feed:
    """The outputs of an OIP v2 REST reply, JSON or with binary outputs after the JSON header."""
    content = reply.content
    header_length = reply.headers.get(_HEADER_LENGTH)
    split = int(header_length) if header_length else len(content)
    try:
        answer = orjson.loads(content[:split])
        outputs: Feed = {}
        offset = split
        for out in answer["outputs"]:
            size = (out.get("parameters") or {}).get("binary_data_size")
            if size is not None:
                array = from_bytes(out["name"], out["datatype"], out["shape"], content[offset : offset + size],
                                   REPLY_LIMITS)  # fmt: skip
                offset += size
            else:
                array = from_json(out["name"], out["datatype"], out["shape"], out["data"], REPLY_LIMITS)
            outputs[out["name"]] = decoded(array)
    except (orjson.JSONDecodeError, KeyError, TypeError, InvalidTensor) as exc:
        raise RemoteError(f"unreadable inference reply: {exc}", retriable=False) from None
    return outputs
