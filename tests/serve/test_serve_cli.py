"""``streamml serve`` as a process: it drains on SIGTERM and logs summaries, not one line per request."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx

from streamml.models.registry import Registry
from tests.serve.conftest import IRIS_ROWS

STREAMML = str(Path(sys.executable).with_name("streamml"))


def test_sigterm_drains_requests_in_flight_then_exits(serve_registry: Registry, tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("STREAMML_")}
    env.update({"STREAMML_HOME": str(tmp_path / "home"), "STREAMML_REGISTRY_URL": serve_registry.root_url})
    args = ["serve", "--host", "127.0.0.1", "--http-port", "0", "--grpc-port", "0",
            "--max-batch-size", "1000", "--max-wait-ms", "1500"]  # fmt: skip
    proc = subprocess.Popen([STREAMML, *args], env=env, stderr=subprocess.PIPE, text=True)
    assert proc.stderr is not None
    lines: list[str] = []
    ports: dict[str, int] = {}
    ready = threading.Event()

    def read() -> None:
        assert proc.stderr is not None
        for line in proc.stderr:
            lines.append(line)
            if found := re.search(r"listening: http=\S+:(\d+) grpc=\S+:(\d+)", line):
                ports.update(http=int(found[1]), grpc=int(found[2]))
            if "ready:" in line:
                ready.set()

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        assert ready.wait(60), "".join(lines)
        url = f"http://127.0.0.1:{ports['http']}"
        name = httpx.get(f"{url}/v2/models/iris").json()["inputs"][0]["name"]
        body = {"inputs": [{"name": name, "shape": [3, 4], "datatype": "FP32", "data": IRIS_ROWS.ravel().tolist()}]}
        replies: list[httpx.Response] = []
        threads = [
            threading.Thread(target=lambda: replies.append(httpx.post(f"{url}/v2/models/iris/infer", json=body, timeout=30)))
            for _ in range(8)
        ]
        for thread in threads:
            thread.start()
        time.sleep(0.5)  # the requests wait for their batch (1.5 s) when the signal comes
        proc.send_signal(signal.SIGTERM)
        for thread in threads:
            thread.join(30)
        assert proc.wait(30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
        reader.join(10)
    assert [r.status_code for r in replies] == [200] * 8
    assert all(r.json()["outputs"][0]["data"] == ["setosa", "versicolor", "virginica"] for r in replies)
    log = "".join(lines)
    assert "draining" in log and "stopped" in log
    summary = [ln for ln in lines if "access protocol=rest-v2 status=200" in ln]
    assert len(summary) == 1 and "requests=9" in summary[0], log  # the metadata call and the 8 inferences
