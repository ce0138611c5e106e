"""A model server on free ports over a registry holding an iris classifier (v1 in production, v2 staged)."""

from __future__ import annotations

import asyncio
import os
import re
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from streamml.inference.batching import BatchPolicy
from streamml.models.registry import Registry
from streamml.models.training import train_table
from streamml.serve.server import ModelServer, ServeOptions

IRIS_FEATURES = ["sepal_length", "sepal_width", "petal_length", "petal_width"]
#: rows of the three species, as the Kafka Streams iris demo sends them
IRIS_ROWS = np.array([[5.4, 3.9, 1.7, 0.4], [6.4, 3.2, 4.5, 1.5], [7.7, 3.0, 6.1, 2.3]], dtype=np.float32)
IRIS_SPECIES = ["setosa", "versicolor", "virginica"]


def iris_table() -> pa.Table:
    from sklearn.datasets import load_iris

    data = load_iris()
    columns = {name: data.data[:, i] for i, name in enumerate(IRIS_FEATURES)}
    columns["species"] = np.asarray(data.target_names)[data.target].astype(object)
    return pa.table(columns)


@pytest.fixture(scope="session")
def serve_registry(tmp_path_factory: pytest.TempPathFactory) -> Registry:
    registry = Registry(str(tmp_path_factory.mktemp("serve-registry")))
    table = iris_table()
    for seed in (1, 2):
        train_table("classifier", table, "species", {"model": "logistic"}, name="iris", registry=registry, seed=seed)
    registry.promote("iris", 1)
    registry.promote("iris", 2, alias="staging")
    return registry


@dataclass
class Running:
    server: ModelServer

    @property
    def http(self) -> str:
        return f"localhost:{self.server.http_port}"

    @property
    def grpc(self) -> str:
        return f"localhost:{self.server.grpc_port}"

    @property
    def url(self) -> str:
        return f"http://{self.http}"


def start_server(registry: Registry, **options: object) -> Iterator[Running]:
    """Run a :class:`ModelServer` on its own loop in a thread until the block ends; ready on entry."""
    opts = ServeOptions(host="127.0.0.1", http_port=0, grpc_port=0, refresh_s=0.2, log_every_s=3600, drain_s=5)
    for key, value in options.items():
        setattr(opts, key, value)
    server = ModelServer(registry, opts)
    failure: list[BaseException] = []

    def main() -> None:
        try:
            asyncio.run(server.serve())
        except BaseException as exc:
            failure.append(exc)
            server.started.set()

    thread = threading.Thread(target=main, name="model-server", daemon=True)
    thread.start()
    assert server.started.wait(30), "the server did not bind"
    if failure:
        raise failure[0]
    for _ in range(300):
        if server.plane.ready:
            break
        threading.Event().wait(0.05)
    assert server.plane.ready, "the server did not load its models"
    try:
        yield Running(server)
    finally:
        server.stop()
        thread.join(30)


@pytest.fixture(scope="session")
def iris_server(serve_registry: Registry) -> Iterator[Running]:
    yield from start_server(serve_registry, batching=BatchPolicy(max_batch_size=64, max_wait_ms=2.0))


STREAMML = str(Path(sys.executable).with_name("streamml"))


class ServeProcess:
    """``streamml serve`` as a child process over ``registry``, its stderr collected line by line."""

    def __init__(self, registry: Registry, home: Path, *args: str, http_port: int = 0, grpc_port: int = 0) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("STREAMML_")}
        env.update({"STREAMML_HOME": str(home), "STREAMML_REGISTRY_URL": registry.root_url})
        command = [STREAMML, "serve", "--host", "127.0.0.1", "--http-port", str(http_port),
                   "--grpc-port", str(grpc_port), *args]  # fmt: skip
        self.proc = subprocess.Popen(command, env=env, stderr=subprocess.PIPE, text=True)
        self.lines: list[str] = []
        self.ports: dict[str, int] = {}
        self._ready = threading.Event()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.lines.append(line)
            if found := re.search(r"listening: http=\S+:(\d+) grpc=\S+:(\d+)", line):
                self.ports.update(http=int(found[1]), grpc=int(found[2]))
            if "ready:" in line:
                self._ready.set()

    def wait_ready(self, timeout_s: float = 60) -> ServeProcess:
        assert self._ready.wait(timeout_s), "".join(self.lines)
        return self

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.ports['http']}"

    @property
    def log(self) -> str:
        return "".join(self.lines)

    def finish(self, timeout_s: float = 30) -> int:
        try:
            return self.proc.wait(timeout_s)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait(10)
            self._reader.join(10)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])
