"""The ``streamml serve`` process: every front end on one event loop over one data plane.

REST (Starlette on uvicorn) and gRPC (``grpc.aio``) share the loop, the :class:`DataPlane` and its batcher,
so concurrent requests from both protocols merge into the same ONNX Runtime calls. Startup binds both ports,
then loads the served models: readiness turns true only once they are loaded. Promotions are followed by
re-reading the registry every ``refresh_s`` (no broker needed). SIGTERM or SIGINT drains: readiness turns
false, new requests are answered "not ready", requests in flight finish (at most ``drain_s``), then the
process exits. Requests are not logged one by one (see :mod:`streamml.serve.access`).
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import signal
import socket
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

import grpc
import uvicorn
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response

from streamml.errors import InputError, StreamMLError
from streamml.inference.batching import AdaptiveBatcher, BatchPolicy
from streamml.inference.metrics import Metrics
from streamml.inference.service import InferenceService
from streamml.inference.tensors import Limits
from streamml.models.registry import Registry
from streamml.serve import oip_grpc, oip_rest, tfserving_grpc, tfserving_rest
from streamml.serve.access import AccessLog, AccessMiddleware, GrpcAccess
from streamml.serve.dataplane import DataPlane

log = logging.getLogger(__name__)


@dataclass
class ServeOptions:
    """What ``streamml serve`` serves and how; ports 0 pick free ones."""

    host: str = "0.0.0.0"
    http_port: int = 8000
    grpc_port: int = 8001
    models: Sequence[str] | None = None
    batching: BatchPolicy = field(default_factory=BatchPolicy)
    policies: dict[str, BatchPolicy] = field(default_factory=dict)
    #: threads scoring batches (each batch runs on one) and ONNX Runtime threads per model
    workers: int = 1
    model_threads: int = 1
    limits: Limits = field(default_factory=Limits)
    refresh_s: float = 2.0
    drain_s: float = 10.0
    log_every_s: float = 60.0


class ModelServer:
    """Runs the front ends until stopped; :meth:`run` in the main thread, :meth:`serve` inside a loop."""

    def __init__(self, registry: Registry, options: ServeOptions | None = None, *, version: str = "") -> None:
        self.options = options or ServeOptions()
        o = self.options
        service = InferenceService(registry, threads=o.model_threads, strict=False, metrics=Metrics())
        batcher = AdaptiveBatcher(service, default=o.batching, policies=o.policies, workers=o.workers)
        self.plane = DataPlane(service, batcher, models=o.models, limits=o.limits, server_version=version)
        self.access = AccessLog()
        self.http_port = o.http_port
        self.grpc_port = o.grpc_port
        self.started = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None

    # -- running --------------------------------------------------------------------------------------
    def run(self) -> None:
        """Serve until SIGTERM or SIGINT (blocking)."""
        asyncio.run(self.serve(signals=True))

    def stop(self) -> None:
        """Ask a running server to drain and exit; safe from any thread."""
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)

    async def serve(self, *, signals: bool = False) -> None:
        """Bind, load, serve until :meth:`stop` (or a signal when ``signals``), then drain."""
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        if signals:
            for sig in (signal.SIGTERM, signal.SIGINT):
                self._loop.add_signal_handler(sig, self._stop.set)
        o = self.options
        sock = listen(o.host, o.http_port)
        self.http_port = sock.getsockname()[1]
        grpc_server = self._grpc_server()
        self.grpc_port = _add_port(grpc_server, o.host, o.grpc_port)
        http_server = _Uvicorn(
            uvicorn.Config(self._app(), lifespan="off", log_config=None, access_log=False,
                           timeout_graceful_shutdown=max(1, int(o.drain_s)), server_header=False)
        )  # fmt: skip
        await grpc_server.start()
        http_task = asyncio.create_task(http_server.serve(sockets=[sock]))
        log.info("listening: http=%s:%d grpc=%s:%d", o.host, self.http_port, o.host, self.grpc_port)
        self.started.set()
        background = [asyncio.create_task(self._follow()), asyncio.create_task(self._report())]
        try:
            await self.plane.load()
            # what is loaded by now (libraries, models) lives as long as the process: out of the collector's
            # sight, so a full collection scans only what requests allocate (it took 20-50 ms, the p99 tail)
            gc.collect()
            gc.freeze()
            log.info("ready: %d models", len(self.plane.service.serving()))
            await self._stop.wait()
        finally:
            await self._drain(grpc_server, http_server, http_task)
            for task in background:
                task.cancel()
            self.access.flush()

    async def _drain(self, grpc_server: grpc.aio.Server, http_server: _Uvicorn, http_task: asyncio.Task[None]) -> None:
        log.info("draining: refusing new requests, finishing those in flight (at most %.0f s)", self.options.drain_s)
        self.plane.draining = True
        http_server.should_exit = True
        await asyncio.gather(
            self.plane.batcher.drain(self.options.drain_s),  # queued requests are scored now, not at their timer
            grpc_server.stop(self.options.drain_s),
            http_task,
            return_exceptions=True,
        )
        self.plane.batcher.close()
        log.info("stopped")

    # -- front ends -----------------------------------------------------------------------------------
    def _app(self) -> Starlette:
        async def not_found(_: Request, exc: Exception) -> Response:
            status = exc.status_code if isinstance(exc, HTTPException) else 404
            return oip_rest.json_response({"error": f"no such endpoint ({status})"}, status)

        app = Starlette(
            routes=[*oip_rest.routes(self.plane), *tfserving_rest.routes(self.plane)],
            exception_handlers={404: not_found, 405: not_found},
        )
        app.add_middleware(AccessMiddleware, log=self.access)
        return app

    def _grpc_server(self) -> grpc.aio.Server:
        size = self.options.limits.max_request_bytes
        server = grpc.aio.server(
            interceptors=[GrpcAccess(self.access)],
            options=[("grpc.max_receive_message_length", size), ("grpc.max_send_message_length", size),
                     ("grpc.so_reuseport", 0)],
        )  # fmt: skip
        server.add_generic_rpc_handlers([oip_grpc.handler(self.plane), *tfserving_grpc.handlers(self.plane)])
        return server

    # -- background -----------------------------------------------------------------------------------
    async def _follow(self) -> None:
        """Serve promotions and newly registered models: the registry is re-read every ``refresh_s``."""
        loop = asyncio.get_running_loop()
        service = self.plane.service
        while True:
            await asyncio.sleep(self.options.refresh_s)
            if not self.plane.ready:
                continue
            try:
                await loop.run_in_executor(None, self._refresh, service)
            except Exception:
                log.exception("could not refresh the served models; serving what is loaded")

    def _refresh(self, service: InferenceService) -> None:
        service.refresh()
        service.swap()
        for name in set(self.plane.served_names()) - set(service.serving()):
            try:
                served = service.serve(name)
            except StreamMLError as exc:
                log.debug("model '%s' not served yet: %s", name, exc)
                continue
            log.info("serving %s (newly registered)", served.label)

    async def _report(self) -> None:
        while True:
            await asyncio.sleep(self.options.log_every_s)
            self.access.flush()


class _Uvicorn(uvicorn.Server):
    """uvicorn without its own signal handling: the server's loop owns SIGTERM and SIGINT."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


def listen(host: str, port: int, *, option: str = "--http-port", backlog: int = 2048) -> socket.socket:
    """A non-blocking listening TCP socket (IPv6 when ``host`` is); a port in use is an :class:`InputError`
    naming the command-line ``option`` that chooses another."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise InputError(f"cannot listen on {host}:{port}: {exc.strerror}", hint=f"pick another {option}") from None
    sock.listen(backlog)
    sock.setblocking(False)
    return sock


def _add_port(server: grpc.aio.Server, host: str, port: int) -> int:
    address = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    try:
        bound = server.add_insecure_port(address)
    except RuntimeError:
        bound = 0
    if not bound:
        raise InputError(f"cannot listen on {address} for gRPC", hint="is the port in use? pick --grpc-port")
    return int(bound)
