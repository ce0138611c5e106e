"""Access logs without a line per request: counts and latency percentiles per front end and status.

A model server answers thousands of requests a second; a log line each drowns the log and costs more than
the inference. Instead every request is counted under (protocol, status) and :meth:`AccessLog.flush` writes
one INFO line per group in ``key=value`` form, e.g.
``access protocol=rest-v2 status=200 requests=5120 p50_ms=0.41 p99_ms=1.90 max_ms=4.12 window_s=60``.
Errors are counted the same way (their message goes back to the client and, for server faults, to the log).
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Awaitable, Callable
from typing import Any

import grpc
import numpy as np
from starlette.types import ASGIApp, Message, Receive, Scope, Send

log = logging.getLogger("streamml.serve.access")

#: latencies kept per group between two flushes (a reservoir beyond that: percentiles stay representative)
_KEEP = 100_000


class AccessLog:
    """Thread-safe request tallies, flushed as one line per group."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._groups: dict[tuple[str, str], list[float]] = {}
        self._counts: dict[tuple[str, str], int] = {}
        self._since = time.monotonic()

    def record(self, protocol: str, status: str, seconds: float) -> None:
        key = (protocol, status)
        with self._lock:
            count = self._counts.get(key, 0) + 1
            self._counts[key] = count
            kept = self._groups.setdefault(key, [])
            if len(kept) < _KEEP:
                kept.append(seconds)
            elif (slot := random.randrange(count)) < _KEEP:
                kept[slot] = seconds

    def flush(self) -> list[str]:
        """Log (and return) one line per group since the last flush, then start over."""
        with self._lock:
            groups, counts, since = self._groups, self._counts, self._since
            self._groups, self._counts, self._since = {}, {}, time.monotonic()
        window = time.monotonic() - since
        lines = []
        for (protocol, status), latencies in sorted(groups.items()):
            ms = np.asarray(latencies) * 1e3
            p50, p99 = np.percentile(ms, [50, 99])
            lines.append(
                f"access protocol={protocol} status={status} requests={counts[(protocol, status)]} "
                f"p50_ms={p50:.2f} p99_ms={p99:.2f} max_ms={ms.max():.2f} window_s={window:.0f}"
            )
        for line in lines:
            log.info(line)
        return lines


class AccessMiddleware:
    """ASGI middleware counting every HTTP request in an :class:`AccessLog` by protocol and status."""

    def __init__(self, app: ASGIApp, log: AccessLog) -> None:
        self.app = app
        self.log = log

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def sending(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, sending)
        finally:
            self.log.record(_rest_protocol(scope.get("path", "")), str(status), time.perf_counter() - started)


def _rest_protocol(path: str) -> str:
    if path.startswith("/v2"):
        return "rest-v2"
    if path.startswith("/v1"):
        return "rest-tfserving"
    return "rest"


class GrpcAccess(grpc.aio.ServerInterceptor):
    """gRPC interceptor counting every unary call in an :class:`AccessLog` by service and status code."""

    def __init__(self, log: AccessLog) -> None:
        self.log = log

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(details)
        if handler is None or handler.unary_unary is None:
            return handler
        inner = handler.unary_unary
        method = str(details.method)
        protocol = "grpc-v2" if method.startswith("/inference.") else "grpc-tfserving"

        async def call(request: Any, context: grpc.aio.ServicerContext) -> Any:
            started = time.perf_counter()
            status = "OK"
            try:
                return await inner(request, context)
            except BaseException:
                code = context.code()
                status = code.name if isinstance(code, grpc.StatusCode) else "UNKNOWN"
                raise
            finally:
                self.log.record(protocol, status, time.perf_counter() - started)

        return grpc.unary_unary_rpc_method_handler(
            call, request_deserializer=handler.request_deserializer, response_serializer=handler.response_serializer
        )
