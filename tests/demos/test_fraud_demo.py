"""The main job, shortened: the README's demo command and the notebook, against the test broker."""

from __future__ import annotations

import re
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.demos.notebooks import execute

pytestmark = [pytest.mark.broker, pytest.mark.slow]


def test_demo_command_runs_the_whole_loop(cli: Callable[..., subprocess.CompletedProcess[str]], tmp_path: Path) -> None:
    out = tmp_path / "demo-output"
    proc = cli("demo", "fraud", "--history", "6000", "--live-seconds", "4", "--rate", "500", "--fraud-rate", "0.02", "-o", str(out),
               env={"STREAMML_HOME": str(tmp_path / "home")}, timeout=300)  # fmt: skip
    assert "done in" in proc.stdout, proc.stdout + proc.stderr
    assert re.search(r"dashboard: http://127\.0\.0\.1:\d+/", proc.stdout), proc.stdout
    report = (out / "report.md").read_text()
    assert "| autoencoder | fraud:" in report and "| gbdt | fraud-gbdt:" in report
    lines = report.splitlines()
    header = lines.index("| recipe | version | ROC AUC | PR AUC | precision | recall | F1 | threshold |")
    assert [line.split(" | ")[0] for line in lines[header + 2 : header + 4]] == ["| autoencoder", "| gbdt"]
    assert re.search(r"latency .*: p50 [\d.]+ ms, p95 [\d.]+ ms, p99 [\d.]+ ms", report), report
    scored = re.search(r"live transactions scored: ([\d,]+) of ([\d,]+) produced", report)
    # 4 s at 500/s, and more while the retraining the drift triggers decides: every one produced is scored
    assert scored and scored.group(1) == scored.group(2) and int(scored.group(1).replace(",", "")) >= 2_000, report
    # the product's monitor joined the late labels: at least one settled window, with its plot
    monitor = lines[
        lines.index("| window end | version | count | labelled | precision | recall | F1 | PR AUC | PSI max |") + 2 :
    ]
    rows = [line for line in monitor if line.startswith("| ")]
    assert rows and all(int(row.split(" | ")[3]) > 0 for row in rows), report  # labelled rows in every window
    assert (out / "monitor.png").exists()
    # the drift alert triggered the retraining policy: a candidate trained, scored in shadow, then decided
    steps = lines[lines.index("## Retraining") + 1 :]
    actions = [line.split(" ")[1] for line in steps if line.startswith("- ")]
    assert actions[:2] == ["candidate", "shadow"] and actions[2] in ("promote", "reject"), report
    if actions[2] == "promote":  # the promoted version then scored live traffic, and the monitor saw it
        promoted = re.search(r"- promote fraud:(\d+):", report).group(1)  # type: ignore[union-attr]
        assert any(row.split(" | ")[1] == promoted for row in rows), report
    assert sorted(p.name for p in out.glob("autoencoder-*.png")) == [
        "autoencoder-loss.png", "autoencoder-pr.png", "autoencoder-roc.png", "autoencoder-score_histogram.png",
    ]  # fmt: skip


def test_notebook_runs(bootstrap: str, tmp_path: Path, repo_root: Path) -> None:
    env = {"STREAMML_BOOTSTRAP": bootstrap, "STREAMML_HOME": str(tmp_path / "home"), "DEMO_HISTORY": "5000", "DEMO_FRAUD_RATE": "0.02",
           "DEMO_LIVE_SECONDS": "3", "DEMO_LIVE_RATE": "500", "DEMO_EPOCHS": "10",
           "DEMO_OUTPUT": str(tmp_path / "out")}  # fmt: skip
    outputs = execute(repo_root / "notebooks" / "fraud_detection.ipynb", env, tmp_path)
    scored = re.search(r"scored ([\d,]+) of ([\d,]+) live transactions", outputs)
    # at least the 3 s at 500/s; more while the retraining the drift triggers decides
    assert scored and scored.group(1) == scored.group(2) and int(scored.group(1).replace(",", "")) >= 1_500, outputs
    assert (tmp_path / "out" / "report.md").exists()
    # the Keras autoencoder trained in the notebook, imported and scored in the stream
    assert re.search(r"fraud-keras:1: STRUCT<score DOUBLE, is_anomaly BOOLEAN>, parity \d", outputs), outputs
    assert re.search(r"fraud-keras in the stream: \d+% of [1-9]\d* frauds flagged", outputs), outputs
