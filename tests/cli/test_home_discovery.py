"""The local broker is found from any folder of the project: ``.streamml/`` is looked for upward, as git does."""

from __future__ import annotations

import json
import os
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.conftest import STREAMML

pytestmark = pytest.mark.broker


def _streamml(*args: str, cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    full = {k: v for k, v in os.environ.items() if not k.startswith("STREAMML_")}
    full.update(env or {})
    return subprocess.run([STREAMML, *args], input='{"a": 1}\n', capture_output=True, text=True, cwd=cwd, env=full,
                          timeout=120, check=False)  # fmt: skip


def test_produce_from_a_subfolder_finds_the_project_broker(
    bootstrap: str, topic: Callable[..., str], tmp_path: Path
) -> None:
    project = tmp_path / "project"
    deep = project / "src" / "pkg"
    deep.mkdir(parents=True)
    alone = _streamml("produce", topic(), cwd=deep)
    assert alone.returncode != 0 and f"looked for .streamml/ in {deep.resolve()}" in alone.stderr

    # what 'streamml kafka start' leaves in the project: the running broker's address (this process stands
    # in for the broker's pid, which must be alive)
    state = project / ".streamml" / "broker" / "broker.json"
    state.parent.mkdir(parents=True)
    state.write_text(
        json.dumps({"pid": os.getpid(), "bootstrap": bootstrap, "version": "4", "started_at": time.time()})
    )
    name = topic()
    produced = _streamml("produce", name, cwd=deep)
    assert produced.returncode == 0, produced.stderr
    consumed = _streamml("consume", name, "--output", "jsonl", cwd=project / "src")
    assert [json.loads(line) for line in consumed.stdout.splitlines()] == [{"a": 1}]

    elsewhere = tmp_path / "elsewhere"  # an explicit STREAMML_HOME still wins
    explicit = _streamml("produce", name, cwd=deep, env={"STREAMML_HOME": str(elsewhere)})
    assert explicit.returncode != 0 and f"looked in {elsewhere.resolve()}" in explicit.stderr
