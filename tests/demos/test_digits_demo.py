"""The digits demo, shortened: its command (training, then ``--dont-train`` on the saved model) and its
notebook, against the test broker: every question answered once, over request/reply topics."""

from __future__ import annotations

import re
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from streamml.config import Settings
from streamml.models.registry import Registry
from tests.demos.notebooks import execute

pytestmark = [pytest.mark.broker, pytest.mark.slow]
pytest.importorskip("torch")

SMALL = ["--size", "16", "--epochs", "12", "--live-seconds", "3", "--callers", "4"]


def answered(report: str) -> tuple[int, float]:
    """(questions answered, accuracy) from a report; every question asked must have been answered, in time."""
    asked = re.search(r"answered: ([\d,]+) of ([\d,]+) asked by \d+ callers, timeouts 0, by digits:1", report)
    assert asked is not None and asked[1] == asked[2] and asked[1] != "0", report
    accuracy = re.search(r"accuracy: ([\d.]+) over [\d,]+ distinct pictures", report)
    assert accuracy is not None, report
    return int(asked[1].replace(",", "")), float(accuracy[1])


def test_demo_trains_answers_every_question_and_reuses_the_saved_model(
    cli: Callable[..., subprocess.CompletedProcess[str]], tmp_path: Path
) -> None:
    refused = cli("demo", "digits", "--dont-train", *SMALL, "-o", str(tmp_path / "none"), check=False)
    assert refused.returncode != 0 and "no saved 'digits' model" in refused.stderr, refused.stderr
    assert "Traceback" not in refused.stderr

    proc = cli("demo", "digits", *SMALL, "-o", str(tmp_path / "out"), timeout=300)
    assert re.search(r"trained digits:1 on 1,437 pictures", proc.stdout), proc.stdout
    report = (tmp_path / "out" / "report.md").read_text()
    _, accuracy = answered(report)
    assert accuracy >= 0.9, report
    assert re.search(r"\| digit \| 0 \| 1 \| 2 .* \| 9 \|", report), report
    for plot in ("live-per_class_accuracy.png", "image-per_class_accuracy.png", "image-accuracy.png"):
        assert (tmp_path / "out" / plot).stat().st_size > 1_000, plot

    again = cli("demo", "digits", "--dont-train", *SMALL, "-o", str(tmp_path / "again"), timeout=300)
    assert "evaluating the saved digits:1" in again.stdout and "trained" not in again.stdout, again.stdout
    assert answered((tmp_path / "again" / "report.md").read_text())[1] >= 0.9
    assert len(Registry(Settings(home=tmp_path / "home").registry_root).versions("digits")) == 1


def test_notebook_tells_the_same_story(bootstrap: str, tmp_path: Path, repo_root: Path) -> None:
    env = {"STREAMML_BOOTSTRAP": bootstrap, "STREAMML_HOME": str(tmp_path / "home"), "DEMO_SIZE": "16",
           "DEMO_EPOCHS": "12", "DEMO_LIVE_SECONDS": "3", "DEMO_CALLERS": "4", "DEMO_OUTPUT": str(tmp_path / "out")}  # fmt: skip
    outputs = execute(repo_root / "notebooks" / "digits.ipynb", env, tmp_path)
    assert len(re.findall(r"request \d+: the model says \d \(", outputs)) == 3, outputs
    assert re.search(r"answered ([1-9][\d,]*) of \1 questions, 0 timeouts, by digits:1", outputs), outputs
    answered((tmp_path / "out" / "report.md").read_text())
