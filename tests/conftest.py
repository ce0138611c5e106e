"""Shared fixtures: one real Kafka broker per test session, unique topic and group names per test, and a
stand-in schema registry."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from streamml.config import Settings
from streamml.kafka import Admin, LocalBroker, client_config
from tests.registry_stand_in import registry_server  # noqa: F401  (a fixture shared by the suites)


@pytest.fixture(scope="session")
def kafka_settings(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Settings]:
    """Settings of the test cluster: ``STREAMML_TEST_BOOTSTRAP`` if set, else a local broker on free ports."""
    external = os.environ.get("STREAMML_TEST_BOOTSTRAP")
    if external:
        yield Settings(bootstrap=external)
        return
    home = tmp_path_factory.mktemp("streamml-home")
    local = Settings(home=home, broker_port=0, controller_port=0, broker_heap="512m")
    broker = LocalBroker(local)
    info = broker.start()
    assert info.bootstrap is not None
    try:
        yield Settings(bootstrap=info.bootstrap, home=home)
    finally:
        broker.stop()


@pytest.fixture(scope="session")
def bootstrap(kafka_settings: Settings) -> str:
    assert kafka_settings.bootstrap is not None
    return kafka_settings.bootstrap


@pytest.fixture(scope="session")
def kafka_config(kafka_settings: Settings) -> dict[str, object]:
    return client_config(kafka_settings)


@pytest.fixture(scope="session")
def admin(kafka_config: dict[str, object]) -> Admin:
    return Admin(kafka_config)


@pytest.fixture
def unique(request: pytest.FixtureRequest) -> Callable[[str], str]:
    """``unique("orders")`` -> a topic or group name no other test uses."""
    base = re.sub(r"[^a-zA-Z0-9]+", "-", request.node.name)[:40].strip("-")

    def make(prefix: str = "t") -> str:
        return f"{prefix}-{base}-{uuid.uuid4().hex[:8]}"

    return make


@pytest.fixture
def topic(admin: Admin, unique: Callable[[str], str]) -> Callable[..., str]:
    """Factory creating a fresh topic: ``topic(partitions=3, config={...})`` returns its name."""

    def make(partitions: int = 1, config: dict[str, str] | None = None, prefix: str = "t") -> str:
        name = unique(prefix)
        admin.create_topic(name, partitions=partitions, config=config)
        return name

    return make


@pytest.fixture
def repo_root() -> Path:
    return Path(__file__).resolve().parents[1]


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
