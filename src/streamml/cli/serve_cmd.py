"""``streamml serve``: the registry's models over OIP v2 and TF Serving, REST and gRPC, until SIGTERM."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import typer

from streamml.cli.state import state
from streamml.errors import InputError

if TYPE_CHECKING:
    from streamml.inference.batching import BatchPolicy


def serve(
    ctx: typer.Context,
    http_port: int = typer.Option(8000, "--http-port", min=0, max=65535, help="REST port (0 picks a free one)."),
    grpc_port: int = typer.Option(8001, "--grpc-port", min=0, max=65535, help="gRPC port (0 picks a free one)."),
    host: str = typer.Option("0.0.0.0", "--host", help="Interface to listen on."),
    models: str | None = typer.Option(None, "--models", help="Serve only these models: NAME[,NAME...]."),
    max_batch_size: int = typer.Option(64, "--max-batch-size", min=1, help="Rows merged into one model call."),
    max_wait_ms: float = typer.Option(2.0, "--max-wait-ms", min=0.0, help="Longest wait for a batch to fill."),
    batch: list[str] = typer.Option(
        [], "--batch", help="A model's own batching: NAME=MAX_BATCH_SIZE/MAX_WAIT_MS (repeatable)."
    ),
    workers: int = typer.Option(1, "--workers", min=1, help="Threads scoring batches."),
    model_threads: int = typer.Option(1, "--model-threads", min=1, help="ONNX Runtime threads per model."),
    max_request_mb: float = typer.Option(64.0, "--max-request-mb", min=0.001, help="Largest request body."),
    drain_s: float = typer.Option(10.0, "--drain-s", min=0.0, help="Seconds in-flight requests get on SIGTERM."),
    log_every_s: float = typer.Option(60.0, "--log-every-s", min=0.1, help="Access summary interval."),
) -> None:
    """Serve every registered model (or those named) by name, NAME:VERSION and NAME@ALIAS; follow promotions."""
    from streamml import __version__
    from streamml.inference.batching import BatchPolicy
    from streamml.inference.tensors import Limits
    from streamml.runtime.training import default_registry
    from streamml.serve.server import ModelServer, ServeOptions

    for name in ("streamml.serve", "streamml.inference"):
        if logging.getLogger(name).getEffectiveLevel() > logging.INFO:
            logging.getLogger(name).setLevel(logging.INFO)
    options = ServeOptions(
        host=host,
        http_port=http_port,
        grpc_port=grpc_port,
        models=[m.strip() for m in models.split(",") if m.strip()] if models else None,
        batching=BatchPolicy(max_batch_size, max_wait_ms),
        policies=dict(parse_policy(text) for text in batch),
        workers=workers,
        model_threads=model_threads,
        limits=Limits(max_request_bytes=int(max_request_mb * 1024 * 1024)),
        drain_s=drain_s,
        log_every_s=log_every_s,
    )
    server = ModelServer(default_registry(state(ctx).settings), options, version=__version__)
    server.run()


def parse_policy(text: str) -> tuple[str, BatchPolicy]:
    """``NAME=64/2.5`` -> (NAME, BatchPolicy(64, 2.5))."""
    from streamml.inference.batching import BatchPolicy

    name, _, rest = text.partition("=")
    size, _, wait = rest.partition("/")
    try:
        return name.strip(), BatchPolicy(int(size), float(wait) if wait else 2.0)
    except ValueError:
        raise InputError(f"--batch '{text}' is not NAME=MAX_BATCH_SIZE/MAX_WAIT_MS", hint="e.g. iris=64/2") from None
