"""The local Mosquitto broker's lifecycle: start (idempotent, really accepting), status, stop, busy port."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from streamml.config import Settings
from streamml.errors import BrokerError
from streamml.kafka.mosquitto import LocalMosquitto, parse_address, wait_until_ready

pytestmark = pytest.mark.skipif(not Path("/usr/sbin/mosquitto").exists(), reason="mosquitto is not installed")


def test_start_status_stop(tmp_path: Path) -> None:
    broker = LocalMosquitto(Settings(home=tmp_path, mqtt_port=0))
    info = broker.start()
    try:
        assert info.running and not info.already_running and info.host_port is not None
        wait_until_ready(*info.host_port, timeout_s=5)  # a second client is accepted too
        again = broker.start()
        assert again.already_running and again.pid == info.pid
        assert broker.status().address == info.address
        conf = broker.config_file.read_text()
        assert f"listener {info.host_port[1]} 127.0.0.1" in conf and "max_inflight_messages 1000" in conf
    finally:
        assert broker.stop()
    assert not broker.status().running
    assert not broker.stop()
    assert (broker.data_dir / "mosquitto.db").exists()  # a graceful stop saves the persistence file


def test_busy_port_is_one_clear_error(tmp_path: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        with pytest.raises(BrokerError, match=f"port {port} is already in use"):
            LocalMosquitto(Settings(home=tmp_path, mqtt_port=port)).start()


def test_parse_address() -> None:
    assert parse_address("127.0.0.1:1884") == ("127.0.0.1", 1884)
    assert parse_address("mqtt.local") == ("mqtt.local", 1883)
    with pytest.raises(BrokerError, match="invalid MQTT address 'host:x'"):
        parse_address("host:x")


def test_cli_start_status_stop(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("STREAMML_")}
    env.update({"STREAMML_HOME": str(tmp_path), "STREAMML_MQTT_PORT": "0", "COLUMNS": "200"})
    streamml = str(Path(sys.executable).with_name("streamml"))

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [streamml, "mqtt", *args], check=False, capture_output=True, text=True, env=env, timeout=60
        )

    started = run("start")
    assert started.returncode == 0, started.stderr
    assert "Mosquitto 2." in started.stdout and "started at 127.0.0.1:" in started.stdout
    try:
        status = run("status")
        assert status.returncode == 0 and "running at 127.0.0.1:" in status.stdout
    finally:
        assert "Mosquitto stopped" in run("stop").stdout
    stopped = run("status")
    assert stopped.returncode == 1 and "not running" in stopped.stdout
