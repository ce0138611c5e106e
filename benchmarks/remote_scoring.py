"""The fraud pipeline scored three ways, side by side in one run: the model embedded in the stream
(``PREDICT`` on ONNX Runtime in the worker), remote (``PREDICT`` over gRPC to ``streamml serve`` on the same
machine, one call per micro-batch), and the reference demos' per-message blocking call (a new channel and
one ``ModelInfer`` per message, a synchronous commit per message).

Throughput is measured on a topic filled beforehand (``--records``; ``--loop-records`` for the per-message
loop, whose records/s extrapolates); latency (p50/p99 from record timestamp to readable output) at a steady
``--rate`` for ``--seconds``. Rounds alternate the scenarios so machine noise hits each alike.

    .venv/bin/python -m benchmarks.remote_scoring --records 100000 --loop-records 2000 --rounds 2
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

from benchmarks.cluster import bench_settings
from benchmarks.report import median, table, write_section
from streamml.bench import data, scenarios
from streamml.bench.results import ScenarioResult
from streamml.inference.remote import describe
from streamml.models.card import RemoteEndpoint
from streamml.models.registry import Registry

EMBEDDED, REMOTE, LOOP = "embedded: PREDICT in the stream", "remote: PREDICT over gRPC", "per-message blocking call"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_server(registry_url: str, home: Path) -> tuple[subprocess.Popen[bytes], int]:
    http, grpc = free_port(), free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("STREAMML_")}
    env.update({"STREAMML_HOME": str(home), "STREAMML_REGISTRY_URL": registry_url})
    streamml = str(Path(sys.executable).with_name("streamml"))
    proc = subprocess.Popen(
        [streamml, "serve", "--host", "127.0.0.1", "--http-port", str(http), "--grpc-port", str(grpc),
         "--models", "fraud"],
        env=env, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{http}/v2/health/ready").status_code == 200:
                return proc, grpc
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    proc.kill()
    raise SystemExit("streamml serve did not become ready")


def register_remote(registry: Registry, grpc_port: int) -> str:
    """``fraud_remote``: the fraud card (its output and threshold) scored by the server; returns its input."""
    endpoint = RemoteEndpoint(url=f"grpc://127.0.0.1:{grpc_port}", model="fraud", timeout_ms=10_000)
    signature, _ = describe(endpoint)
    card = registry.get("fraud").card.with_updates(remote=endpoint, signature=signature, framework="remote")
    registry.register_remote("fraud_remote", card)
    return signature.inputs[0].name


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--records", type=int, default=100_000)
    parser.add_argument("--loop-records", type=int, default=2_000)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--rate", type=int, default=2_000)
    parser.add_argument("--seconds", type=float, default=10.0)
    args = parser.parse_args()
    results: dict[str, list[ScenarioResult]] = {EMBEDDED: [], REMOTE: [], LOOP: []}
    latency: dict[str, ScenarioResult] = {}
    with bench_settings() as settings, tempfile.TemporaryDirectory(prefix="streamml-remote-") as tmp:
        model = data.train_model(Path(tmp))
        registry = Registry(model.registry_url)
        server, grpc_port = start_server(model.registry_url, Path(tmp) / "serve")
        try:
            input_name = register_remote(registry, grpc_port)
            bench = scenarios.Bench(settings, model, Path(tmp))
            source, loop_source = bench.name("in"), bench.name("loop-in")
            data.fill_topic(bench.config, bench.admin, source, data.input_table(args.records))
            data.fill_topic(bench.config, bench.admin, loop_source, data.input_table(args.loop_records))
            for round_no in range(args.rounds):
                print(f"round {round_no + 1}/{args.rounds}", file=sys.stderr)
                for label, name in ((EMBEDDED, "fraud"), (REMOTE, "fraud_remote")):
                    results[label].append(scenarios.streamml_scoring(bench, source, args.records, model=name))
                server_address = f"127.0.0.1:{grpc_port}"
                results[LOOP].append(
                    scenarios.per_message(bench, loop_source, args.loop_records, server_address, input_name)
                )
            for label, name in ((EMBEDDED, "fraud"), (REMOTE, "fraud_remote")):
                print(f"latency: {label}", file=sys.stderr)
                latency[label] = scenarios.latency(bench, args.rate, args.seconds, model=name)
            bench.drop_topics(source, loop_source)
        finally:
            server.terminate()
            server.wait(30)
    write_section("remote", "Embedded vs remote scoring", report(results, latency, args), command(args))


def report(
    results: dict[str, list[ScenarioResult]], latency: dict[str, ScenarioResult], args: argparse.Namespace
) -> str:
    rates = {k: [r.records_per_s or 0.0 for r in v if r.ok] for k, v in results.items()}
    medians = {k: median(v) if v else None for k, v in rates.items()}
    base = medians[EMBEDDED]
    rows = []
    for label, runs in results.items():
        lat = latency.get(label)
        errors = [r.error for r in runs if r.error] + ([lat.error] if lat is not None and lat.error else [])
        rate = medians[label]
        rows.append([
            label, f"{runs[0].records:,}" if runs else "-", f"{rate:,.0f}" if rate else "-",
            f"{lat.p50_ms:.0f}" if lat and lat.p50_ms is not None else "-",
            f"{lat.p99_ms:.0f}" if lat and lat.p99_ms is not None else "-",
            f"{rate / base:.3g}x" if rate and base else "-", "FAILED: " + errors[0] if errors else "ok",
        ])  # fmt: skip
    body = table(["scenario", "records", "records/s (median)", "p50 ms", "p99 ms", "vs embedded", "status"], rows)
    return (
        f"{body}\n\nThroughput: {args.records:,} records of 30 features already in the topic (the per-message loop: "
        f"{args.loop_records:,}), exactly-once, median of {args.rounds} rounds. Latency: record timestamp to output "
        f"readable (read_committed), at {args.rate:,} records/s for {args.seconds:.0f} s. The server runs on the "
        "same 2 cores as the worker and the broker, so remote scoring pays for the model and the protocol on the "
        "same CPUs; the per-message call pays a connection, a request and a synchronous commit per record."
    )


def command(args: argparse.Namespace) -> str:
    return (
        f".venv/bin/python -m benchmarks.remote_scoring --records {args.records} --loop-records {args.loop_records} "
        f"--rounds {args.rounds} --rate {args.rate} --seconds {args.seconds:g}"
    )


if __name__ == "__main__":
    main()
