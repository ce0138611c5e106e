"""``streamml serve`` as a process: it drains on SIGTERM and logs summaries, not one line per request."""

from __future__ import annotations

import os
import signal
import subprocess
import threading
from pathlib import Path

import httpx

from streamml.models.registry import Registry
from streamml.runtime.session import wait_for
from tests.serve.conftest import IRIS_ROWS, STREAMML, Running, ServeProcess, free_port


def pending(url: str) -> float:
    """Requests the server holds for model iris:1, from its Prometheus metrics."""
    prefix = 'nv_inference_pending_request_count{model="iris",version="1"}'
    lines = [ln for ln in httpx.get(f"{url}/metrics").text.splitlines() if ln.startswith(prefix)]
    return float(lines[0].rsplit(" ", 1)[1]) if lines else 0.0


def test_sigterm_drains_requests_in_flight_then_exits(serve_registry: Registry, tmp_path: Path) -> None:
    # a batch would wait 20 s to fill, longer than the drain: only a drain that scores the queue at once answers
    server = ServeProcess(serve_registry, tmp_path / "home", "--max-batch-size", "1000", "--max-wait-ms", "20000",
                          "--drain-s", "5")  # fmt: skip
    try:
        server.wait_ready()
        name = httpx.get(f"{server.url}/v2/models/iris").json()["inputs"][0]["name"]
        body = {"inputs": [{"name": name, "shape": [3, 4], "datatype": "FP32", "data": IRIS_ROWS.ravel().tolist()}]}
        replies: list[httpx.Response] = []

        def ask() -> None:
            replies.append(httpx.post(f"{server.url}/v2/models/iris/infer", json=body, timeout=30))

        threads = [threading.Thread(target=ask) for _ in range(8)]
        for thread in threads:
            thread.start()
        assert wait_for(lambda: pending(server.url) == 8, 30), "the requests never waited for their batch"
        server.proc.send_signal(signal.SIGTERM)
        for thread in threads:
            thread.join(30)
    finally:
        code = server.finish()
    assert code == 0, server.log
    assert [r.status_code for r in replies] == [200] * 8
    assert all(r.json()["outputs"][0]["data"] == ["setosa", "versicolor", "virginica"] for r in replies)
    assert "draining" in server.log and "stopped" in server.log
    summary = [ln for ln in server.lines if "access protocol=rest-v2 status=200" in ln]
    assert len(summary) == 1 and "requests=9" in summary[0], server.log  # the metadata call and the 8 inferences


def test_a_port_in_use_is_a_clear_error(serve_registry: Registry, tmp_path: Path) -> None:
    first = ServeProcess(serve_registry, tmp_path / "home").wait_ready()
    try:
        second = ServeProcess(serve_registry, tmp_path / "home", http_port=first.ports["http"])
        assert second.finish() != 0
        assert "cannot listen on 127.0.0.1" in second.log and "Traceback" not in second.log
    finally:
        first.proc.send_signal(signal.SIGTERM)
        first.finish()


def run_cli(registry: Registry, home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("STREAMML_")}
    env.update({"STREAMML_HOME": str(home), "STREAMML_REGISTRY_URL": registry.root_url, "COLUMNS": "200"})
    return subprocess.run([STREAMML, *args], env=env, capture_output=True, text=True, timeout=120, check=False)


def test_models_register_remote_reads_the_server_and_refuses_clearly(iris_server: Running, tmp_path: Path) -> None:
    registry = Registry(str(tmp_path / "runner-registry"))
    done = run_cli(registry, tmp_path, "models", "register", "flowers", "--remote", f"grpc://{iris_server.grpc}",
                   "--model", "iris", "--timeout-ms", "800")  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "registered flowers:1" in done.stdout and "label VARCHAR" in done.stdout
    card = registry.get("flowers").card
    assert card.remote is not None and card.remote.timeout_ms == 800 and card.signature is not None
    shown = run_cli(registry, tmp_path, "models", "show", "flowers")
    assert f"remote: v2 grpc://{iris_server.grpc} model iris" in shown.stdout, shown.stdout
    for args, message in [
        (["--remote", "localhost:1"], "is not a URL"),
        (["--remote", f"http://{iris_server.http}", "--protocol", "kserve"], "unknown protocol"),
        (["--remote", f"http://127.0.0.1:{free_port()}"], "cannot read the metadata"),
        (["--remote", f"http://{iris_server.http}", "--model", "nope"], "cannot read the metadata"),
    ]:
        refused = run_cli(registry, tmp_path, "models", "register", "other", *args)
        assert refused.returncode != 0 and message in refused.stderr and "Traceback" not in refused.stderr, refused
