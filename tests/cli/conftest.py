from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

STREAMML = str(Path(sys.executable).with_name("streamml"))


@pytest.fixture
def cli(bootstrap: str, tmp_path: Path) -> Callable[..., subprocess.CompletedProcess[str]]:
    """Run the installed ``streamml`` command against the test cluster: ``cli("topic", "list")``."""

    def run(*args: str, input: str | None = None, env: dict[str, str] | None = None, check: bool = True,
            timeout: float = 120) -> subprocess.CompletedProcess[str]:  # fmt: skip
        full_env = {k: v for k, v in os.environ.items() if not k.startswith("STREAMML_")}
        full_env.update({"STREAMML_BOOTSTRAP": bootstrap, "STREAMML_HOME": str(tmp_path / "home"), "COLUMNS": "200"})
        full_env.update(env or {})
        proc = subprocess.run(
            [STREAMML, *args], input=input, capture_output=True, text=True, env=full_env, timeout=timeout, check=False
        )
        if check and proc.returncode != 0:
            raise AssertionError(f"streamml {' '.join(args)} exited {proc.returncode}:\n{proc.stderr}")
        return proc

    return run
