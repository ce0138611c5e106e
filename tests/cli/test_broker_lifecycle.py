from __future__ import annotations

import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

pytestmark = pytest.mark.broker
Cli = Callable[..., subprocess.CompletedProcess[str]]


def test_start_status_idempotent_stop(cli: Cli, tmp_path: Path) -> None:
    env = {"STREAMML_BOOTSTRAP": "", "STREAMML_HOME": str(tmp_path / "own"), "STREAMML_BROKER_PORT": "0",
           "STREAMML_CONTROLLER_PORT": "0", "STREAMML_BROKER_HEAP": "256m"}  # fmt: skip
    assert cli("kafka", "status", env=env, check=False).returncode == 1
    started = cli("kafka", "start", env=env).stdout
    assert "started at 127.0.0.1:" in started
    try:
        assert "already running" in cli("kafka", "start", env=env).stdout
        assert "running at 127.0.0.1:" in cli("kafka", "status", env=env).stdout
        assert cli("kafka", "logs", "-n", "5", env=env).stdout.strip()
        assert (tmp_path / "own" / "broker" / "data" / "meta.properties").exists()
    finally:
        assert "stopped" in cli("kafka", "stop", env=env).stdout
    assert cli("kafka", "status", env=env, check=False).returncode == 1
    assert "was not running" in cli("kafka", "stop", env=env).stdout


def test_kafka_commands_refuse_when_a_cluster_is_configured(cli: Cli) -> None:
    proc = cli("kafka", "start", check=False)
    assert proc.returncode == 3
    assert "a cluster is configured" in proc.stderr
