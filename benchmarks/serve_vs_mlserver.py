"""``streamml serve`` next to MLServer: one iris model, the same load tool and load, REST and gRPC.

Trains one scikit-learn pipeline (standard scaler + logistic regression) on iris, then serves it twice:
streamml serves its ONNX export from a registry (``streamml serve`` as a child process), MLServer 1.7 serves
the pipeline itself, saved with joblib, through ``mlserver_sklearn.SKLearnModel`` (from ``.venv-mlserver``,
made by ``bash scripts/setup-mlserver.sh``). Both batch adaptively with the same limits (streamml
``--max-batch-size/--max-wait-ms``, MLServer ``max_batch_size/max_batch_time``) and score on the same number
of workers (streamml: one process, ``--workers`` scoring threads; MLServer: ``parallel_workers`` inference
processes behind its front-end process).

One request is one iris row, asking for the label output only. REST: OIP v2 JSON, loaded with ``hey``;
gRPC: OIP v2 protobuf (typed ``fp32_contents``) from ``benchmarks/protos/``, loaded with ``ghz``. Each
server's answers are checked first (one request per protocol, labels equal to the pipeline's). Then a
warm-up per cell, and ``--rounds`` slices of ``--duration / --rounds`` seconds per cell, alternating
servers so machine noise hits both; requests/s over all slices, p50/p99 the median over slices.

    bash scripts/setup-mlserver.sh
    .venv/bin/python -m benchmarks.serve_vs_mlserver --concurrency 32 --duration 15
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import httpx
import numpy as np

from benchmarks.report import table, write_section

ROOT = Path(__file__).resolve().parents[1]
MLSERVER_VENV = Path(os.environ.get("STREAMML_MLSERVER_VENV", ROOT / ".venv-mlserver"))
PROTO = ROOT / "benchmarks" / "protos" / "open_inference_grpc.proto"
STREAMML = str(Path(sys.executable).with_name("streamml"))
MODEL = "iris"
INPUT = "X"
FEATURES = ["sepal_length", "sepal_width", "petal_length", "petal_width"]
#: the rows the answers are checked on, one per species
CHECK_ROWS = np.array([[5.4, 3.9, 1.7, 0.4], [6.4, 3.2, 4.5, 1.5], [7.7, 3.0, 6.1, 2.3]], dtype=np.float32)


def train_iris() -> Any:
    """The pipeline both servers serve, fitted on all of iris with string labels."""
    from sklearn.datasets import load_iris
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import StandardScaler

    data = load_iris()
    pipeline = Pipeline([("scale", StandardScaler()), ("model", LogisticRegression(max_iter=1000))])
    pipeline.fit(data.data.astype(np.float32), np.asarray(data.target_names)[data.target])
    return pipeline


def register_streamml(pipeline: Any, root: Path) -> str:
    """Register the pipeline's ONNX export as iris v1 (production) in a registry at ``root``; its URL."""
    from sklearn.datasets import load_iris

    from streamml.models.card import OutputSpec
    from streamml.models.export import export_sklearn
    from streamml.models.recipes.base import TrainedModel
    from streamml.models.registry import Registry

    registry = Registry(str(root))
    exported = export_sklearn(pipeline, load_iris().data[::5], input_name=INPUT)
    classes = [str(c) for c in pipeline.classes_]
    trained = TrainedModel(onnx_bytes=exported.onnx_bytes, recipe="classifier", framework=exported.framework,
                           framework_version=None, features=FEATURES, label="species",
                           output=OutputSpec.classifier(classes), metrics={}, params={},
                           parity=exported.parity)  # fmt: skip
    registry.register(MODEL, exported.onnx_bytes, trained.card(MODEL))
    registry.promote(MODEL, 1)
    return registry.root_url


def write_mlserver_repository(pipeline: Any, folder: Path, *, max_batch_size: int, max_wait_ms: float,
                              workers: int, ports: tuple[int, int, int]) -> None:  # fmt: skip
    """MLServer's settings.json and the iris model (joblib + model-settings.json) under ``folder``."""
    import joblib

    http, grpc_port, metrics = ports
    model_dir = folder / MODEL
    model_dir.mkdir(parents=True, exist_ok=True)
    joblib.dump(pipeline, model_dir / "model.joblib")
    settings = {"host": "127.0.0.1", "http_port": http, "grpc_port": grpc_port, "metrics_port": metrics,
                "parallel_workers": workers, "debug": False}  # fmt: skip
    model = {
        "name": MODEL,
        "implementation": "mlserver_sklearn.SKLearnModel",
        "max_batch_size": max_batch_size,
        "max_batch_time": max_wait_ms / 1000,
        "inputs": [{"name": INPUT, "datatype": "FP32", "shape": [-1, 4]}],
        "outputs": [{"name": "predict", "datatype": "BYTES", "shape": [-1, 1]}],
        "parameters": {"uri": "./model.joblib", "version": "1"},
    }
    (folder / "settings.json").write_text(json.dumps(settings, indent=2))
    (model_dir / "model-settings.json").write_text(json.dumps(model, indent=2))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Server:
    """A model server child process (in a session of its own: MLServer forks workers) and its ports."""

    name: str
    command: list[str]
    http_port: int
    grpc_port: int
    label_output: str
    cwd: Path | None = None
    env: dict[str, str] | None = None
    log: Path = field(default_factory=lambda: Path(tempfile.mkstemp(prefix="serve-bench-", suffix=".log")[1]))
    proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    @property
    def grpc(self) -> str:
        return f"127.0.0.1:{self.grpc_port}"

    def start(self, timeout_s: float = 90) -> Server:
        with self.log.open("wb") as out:
            self.proc = subprocess.Popen(self.command, cwd=self.cwd, env=self.env, stdout=out,
                                         stderr=subprocess.STDOUT, start_new_session=True)  # fmt: skip
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited with {self.proc.returncode}:\n{self.tail()}")
            try:
                if httpx.get(f"{self.url}/v2/models/{MODEL}/ready", timeout=1).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"{self.name} was not ready within {timeout_s:.0f} s:\n{self.tail()}")

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(20)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)
        with contextlib.suppress(ProcessLookupError):  # workers left behind by a parent that died first
            os.killpg(self.proc.pid, signal.SIGKILL)

    def tail(self, lines: int = 30) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])

    def __enter__(self) -> Server:
        return self.start()

    def __exit__(self, *_: object) -> None:
        self.stop()


def streamml_server(registry_url: str, home: Path, *, max_batch_size: int, max_wait_ms: float,
                    workers: int) -> Server:  # fmt: skip
    env = {k: v for k, v in os.environ.items() if not k.startswith("STREAMML_")}
    env.update({"STREAMML_HOME": str(home), "STREAMML_REGISTRY_URL": registry_url})
    http, grpc_port = free_port(), free_port()
    command = [STREAMML, "serve", "--host", "127.0.0.1", "--http-port", str(http), "--grpc-port", str(grpc_port),
               "--max-batch-size", str(max_batch_size), "--max-wait-ms", str(max_wait_ms),
               "--workers", str(workers), "--log-every-s", "3600"]  # fmt: skip
    return Server("streamml", command, http, grpc_port, "label", env=env)


def mlserver_server(pipeline: Any, folder: Path, *, max_batch_size: int, max_wait_ms: float, workers: int) -> Server:
    """MLServer over a model repository written to ``folder``; needs ``.venv-mlserver``."""
    binary = MLSERVER_VENV / "bin" / "mlserver"
    if not binary.exists():
        raise SystemExit(f"{binary} is missing: run bash scripts/setup-mlserver.sh first")
    ports = (free_port(), free_port(), free_port())
    write_mlserver_repository(pipeline, folder, max_batch_size=max_batch_size, max_wait_ms=max_wait_ms,
                              workers=workers, ports=ports)  # fmt: skip
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLSERVER_", "VIRTUAL_ENV"))}
    return Server("MLServer", [str(binary), "start", str(folder)], ports[0], ports[1], "predict", cwd=folder, env=env)


# --- one request: the same row, the same shape, each server's label output ---


def rest_body(row: np.ndarray, output: str) -> dict[str, Any]:
    data = [float(v) for v in row]
    return {"inputs": [{"name": INPUT, "shape": [1, 4], "datatype": "FP32", "data": data}],
            "outputs": [{"name": output}]}  # fmt: skip


def grpc_body(row: np.ndarray, output: str) -> dict[str, Any]:
    contents = {"fp32_contents": [float(v) for v in row]}
    return {"model_name": MODEL, "inputs": [{"name": INPUT, "datatype": "FP32", "shape": [1, 4], "contents": contents}],
            "outputs": [{"name": output}]}  # fmt: skip


def rest_label(server: Server, row: np.ndarray) -> str:
    reply = httpx.post(f"{server.url}/v2/models/{MODEL}/infer", json=rest_body(row, server.label_output), timeout=10)
    reply.raise_for_status()
    (out,) = reply.json()["outputs"]
    return str(np.asarray(out["data"]).reshape(-1)[0])


def grpc_label(server: Server, row: np.ndarray) -> str:
    """The label over gRPC, from the message ghz sends (built from the same JSON)."""
    from google.protobuf import json_format
    from tritonclient.grpc import service_pb2 as pb

    request = json_format.ParseDict(grpc_body(row, server.label_output), pb.ModelInferRequest())
    with grpc.insecure_channel(server.grpc) as channel:
        call = channel.unary_unary("/inference.GRPCInferenceService/ModelInfer",
                                   request_serializer=pb.ModelInferRequest.SerializeToString,
                                   response_deserializer=pb.ModelInferResponse.FromString)  # fmt: skip
        reply = call(request, timeout=10)
    if reply.raw_output_contents:
        raw = reply.raw_output_contents[0]
        size = int.from_bytes(raw[:4], "little")
        return raw[4 : 4 + size].decode()
    return reply.outputs[0].contents.bytes_contents[0].decode()


def check_answers(server: Server, expected: list[str]) -> None:
    for protocol, ask in (("REST", rest_label), ("gRPC", grpc_label)):
        got = [ask(server, row) for row in CHECK_ROWS]
        if got != expected:
            raise SystemExit(f"{server.name} {protocol} answered {got}, the pipeline {expected}")


# --- load ---


@dataclass
class Slice:
    ok: int
    errors: int
    seconds: float
    p50_ms: float
    p99_ms: float


def hey(server: Server, seconds: float, concurrency: int) -> Slice:
    body = json.dumps(rest_body(CHECK_ROWS[0], server.label_output))
    command = ["hey", "-z", f"{seconds}s", "-c", str(concurrency), "-m", "POST", "-T", "application/json",
               "-d", body, f"{server.url}/v2/models/{MODEL}/infer"]  # fmt: skip
    text = subprocess.run(command, capture_output=True, text=True, check=True, timeout=seconds + 60).stdout
    return parse_hey(text)


def parse_hey(text: str) -> Slice:
    """hey's text summary: total seconds, latency percentiles, status codes and transport errors."""
    total, percentiles, ok, errors = 0.0, {}, 0, 0
    section = ""
    for raw in text.splitlines():
        line = raw.strip()
        if line.endswith(":") and not line.startswith("["):
            section = line
        if line.startswith("Total:"):
            total = float(line.split()[1])
        elif "% in " in line:
            percent, _, value = line.partition("% in ")
            percentiles[int(percent)] = float(value.split()[0]) * 1000
        elif line.startswith("[") and "responses" in line:
            code, count = line[1:].split("]")
            if code == "200":
                ok += int(count.split()[0])
            else:
                errors += int(count.split()[0])
        elif section.startswith("Error distribution") and line.startswith("["):
            errors += int(line[1:].split("]")[0])
    return Slice(ok, errors, total, percentiles.get(50, float("nan")), percentiles.get(99, float("nan")))


def ghz(server: Server, seconds: float, concurrency: int) -> Slice:
    body = json.dumps(grpc_body(CHECK_ROWS[0], server.label_output))
    pinned = MLSERVER_VENV / "bin" / "ghz"
    binary = str(pinned) if pinned.exists() else shutil.which("ghz") or "ghz"
    # --duration-stop ignore: calls still in flight when the time is up count neither as done nor as errors
    command = [binary, "--insecure", "--proto", str(PROTO), "--call", "inference.GRPCInferenceService.ModelInfer",
               "-d", body, "-c", str(concurrency), "-z", f"{seconds}s", "--duration-stop", "ignore",
               "--format", "json", server.grpc]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, timeout=seconds + 60, check=False)
    if not done.stdout.strip():  # ghz exits 1 when some calls failed, with its report all the same
        raise RuntimeError(f"ghz failed ({done.returncode}): {done.stderr.strip()}")
    return parse_ghz(json.loads(done.stdout))


def parse_ghz(report: dict[str, Any]) -> Slice:
    statuses = report.get("statusCodeDistribution") or {}
    ok = int(statuses.get("OK", 0))
    errors = sum(int(n) for code, n in statuses.items() if code != "OK")
    percentiles = {int(p["percentage"]): p["latency"] / 1e6 for p in report.get("latencyDistribution") or []}
    return Slice(
        ok, errors, report["total"] / 1e9, percentiles.get(50, float("nan")), percentiles.get(99, float("nan"))
    )


LOADS = {"REST": hey, "gRPC": ghz}


@dataclass
class Cell:
    slices: list[Slice] = field(default_factory=list)

    @property
    def rps(self) -> float:
        return sum(s.ok for s in self.slices) / sum(s.seconds for s in self.slices)

    @property
    def p50(self) -> float:
        return statistics.median(s.p50_ms for s in self.slices)

    @property
    def p99(self) -> float:
        return statistics.median(s.p99_ms for s in self.slices)

    @property
    def errors(self) -> int:
        return sum(s.errors for s in self.slices)


def measure(servers: list[Server], args: argparse.Namespace, progress: Any = print) -> dict[tuple[str, str], Cell]:
    cells = {(p, s.name): Cell() for p in LOADS for s in servers}
    for protocol, load in LOADS.items():
        for server in servers:
            progress(f"warm-up {server.name} {protocol} ({args.warmup} s)")
            load(server, args.warmup, args.concurrency)
    slice_s = args.duration / args.rounds
    for i in range(args.rounds):
        order = servers if i % 2 == 0 else servers[::-1]
        for protocol, load in LOADS.items():
            for server in order:
                got = load(server, slice_s, args.concurrency)
                cells[(protocol, server.name)].slices.append(got)
                progress(f"round {i + 1} {server.name} {protocol}: {got.ok / got.seconds:,.0f} req/s, "
                         f"p50 {got.p50_ms:.2f} ms, p99 {got.p99_ms:.2f} ms, {got.errors} errors")  # fmt: skip
    return cells


def rows(cells: dict[tuple[str, str], Cell]) -> list[list[object]]:
    out: list[list[object]] = []
    for protocol in LOADS:
        ours, theirs = cells[(protocol, "streamml")], cells[(protocol, "MLServer")]
        for name, cell in (("streamml", ours), ("MLServer", theirs)):
            out.append([protocol, name, cell.rps, f"{cell.p50:.2f}", f"{cell.p99:.2f}", cell.errors])
        out.append([protocol, "streamml / MLServer", f"{ours.rps / theirs.rps:.2f}x",
                    f"{ours.p50 / theirs.p50:.2f}x", f"{ours.p99 / theirs.p99:.2f}x", "-"])  # fmt: skip
    return out


def verdicts(cells: dict[tuple[str, str], Cell]) -> list[list[object]]:
    out: list[list[object]] = []
    for protocol in LOADS:
        ours, theirs = cells[(protocol, "streamml")], cells[(protocol, "MLServer")]
        ratio = ours.rps / theirs.rps
        met = ratio >= 2 and ours.p99 < theirs.p99
        out.append([f"{protocol}: >= 2x MLServer's requests/s at a lower p99",
                    f"{ratio:.2f}x, p99 {ours.p99:.2f} vs {theirs.p99:.2f} ms", "yes" if met else "no"])  # fmt: skip
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--concurrency", type=int, default=32, help="Requests in flight (hey -c, ghz -c).")
    parser.add_argument("--duration", type=float, default=15.0, help="Measured seconds per server and protocol.")
    parser.add_argument("--rounds", type=int, default=3, help="Slices the duration is cut into, alternating.")
    parser.add_argument("--warmup", type=float, default=3.0, help="Unmeasured seconds per server and protocol.")
    parser.add_argument("--max-batch-size", type=int, default=64)
    parser.add_argument("--max-wait-ms", type=float, default=2.0)
    parser.add_argument("--workers", type=int, default=1, help="streamml --workers; MLServer parallel_workers.")
    parser.add_argument("--no-write", action="store_true", help="Print only; leave docs/benchmarks.md alone.")
    args = parser.parse_args()
    if shutil.which("hey") is None:
        raise SystemExit("hey is missing: run bash scripts/setup-mlserver.sh first")

    pipeline = train_iris()
    expected = [str(v) for v in pipeline.predict(CHECK_ROWS)]
    batching = {"max_batch_size": args.max_batch_size, "max_wait_ms": args.max_wait_ms, "workers": args.workers}
    with tempfile.TemporaryDirectory(prefix="serve-vs-mlserver-") as tmp:
        folder = Path(tmp)
        registry_url = register_streamml(pipeline, folder / "registry")
        ours = streamml_server(registry_url, folder / "home", **batching)
        theirs = mlserver_server(pipeline, folder / "mlserver", **batching)
        with ours, theirs:
            for server in (ours, theirs):
                check_answers(server, expected)
            print(f"answers checked: both servers label {expected}", flush=True)
            cells = measure([ours, theirs], args, progress=lambda m: print(m, flush=True))

    header = ["protocol", "server", "requests/s", "p50 ms", "p99 ms", "errors"]
    result = table(header, rows(cells))
    goals = table(["goal", "measured", "met"], verdicts(cells))
    print(result, goals, sep="\n\n")
    if args.no_write:
        return
    from importlib.metadata import version

    setup = (
        f"One iris row per request (label output only), {args.concurrency} in flight, {args.duration:g} s per "
        f"server and protocol in {args.rounds} alternating slices after a {args.warmup:g} s warm-up; requests/s "
        f"over all slices, p50/p99 the median over slices. REST: OIP v2 JSON with `hey`; gRPC: OIP v2 protobuf "
        f"(typed contents) with `ghz` v0.120.0, one connection, calls in flight at the end not counted. Same model: a scikit-learn "
        f"{version('scikit-learn')} scaler + logistic regression pipeline, served by streamml "
        f"as its ONNX export and by MLServer 1.7.1 (`mlserver_sklearn.SKLearnModel`) as the pickled pipeline. "
        f"Adaptive batching on both: {args.max_batch_size} rows / {args.max_wait_ms:g} ms "
        f"(streamml `--max-batch-size/--max-wait-ms`, MLServer `max_batch_size/max_batch_time`). Workers: "
        f"streamml one process with `--workers {args.workers}` scoring thread(s); MLServer "
        f"`parallel_workers: {args.workers}` inference process(es) behind its front-end process. Load tool, "
        f"client and servers share the machine's cores."
    )
    command = "python -m benchmarks.serve_vs_mlserver " + " ".join(sys.argv[1:])
    write_section(
        "serve", "Model server: streamml serve vs MLServer", f"{setup}\n\n{result}\n\n{goals}", command.strip()
    )


if __name__ == "__main__":
    main()
