"""The local Apache Kafka broker: a single KRaft node (broker + controller) run from the official jars.

Maven resolves the jars from Maven Central into a cache outside the repository (``Settings.cache_dir``).
Broker data, configuration, pid and log live under ``Settings.home / "broker"``. ``start`` is idempotent and
waits for a real metadata response; ``stop`` is graceful first, forced after a timeout.
"""

from __future__ import annotations

import base64
import json
import logging
import shutil
import subprocess
import time
import uuid
from dataclasses import asdict, dataclass
from importlib import resources
from pathlib import Path

from confluent_kafka.admin import AdminClient

from streamml.config import Settings
from streamml.errors import BrokerError
from streamml.kafka.process import alive, free_port, port_free, read_state, tail, terminate

log = logging.getLogger(__name__)

_SERVER_PROPERTIES = """\
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@127.0.0.1:{controller_port}
listeners=PLAINTEXT://127.0.0.1:{port},CONTROLLER://127.0.0.1:{controller_port}
advertised.listeners=PLAINTEXT://127.0.0.1:{port}
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT
log.dirs={data_dir}
num.partitions=1
auto.create.topics.enable=false
offsets.topic.replication.factor=1
offsets.topic.num.partitions=8
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
transaction.state.log.num.partitions=8
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
group.initial.rebalance.delay.ms=0
log.retention.ms=-1
log.segment.bytes=268435456
log.cleaner.backoff.ms=1000
"""

_LOG4J2 = """\
status = warn
appender.console.type = Console
appender.console.name = STDOUT
appender.console.layout.type = PatternLayout
appender.console.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = info
rootLogger.appenderRef.stdout.ref = STDOUT
logger.kafka.name = kafka
logger.kafka.level = warn
logger.apache.name = org.apache.kafka
logger.apache.level = warn
logger.state.name = state.change.logger
logger.state.level = warn
logger.started.name = kafka.server.KafkaRaftServer
logger.started.level = info
"""


@dataclass(frozen=True)
class BrokerInfo:
    """What ``start`` and ``status`` report about the local broker."""

    running: bool
    bootstrap: str | None = None
    pid: int | None = None
    version: str | None = None
    home: str | None = None
    started_at: float | None = None
    already_running: bool = False


class LocalBroker:
    """Lifecycle of the embedded single-node broker described by ``settings``."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.root = settings.home.resolve() / "broker"
        self.data_dir = self.root / "data"
        self.log_file = self.root / "logs" / "broker.log"
        self.state_file = self.root / "broker.json"
        self.jar_dir = settings.cache_dir.expanduser().resolve() / "kafka" / settings.kafka_version / "libs"

    # -- jars ---------------------------------------------------------------------------------------------
    def ensure_jars(self) -> Path:
        """Resolve the broker jars with Maven unless they are cached already; return the jar folder."""
        marker = self.jar_dir / ".complete"
        if marker.exists():
            return self.jar_dir
        mvn = shutil.which("mvn")
        if mvn is None:
            raise BrokerError("Maven ('mvn') is not installed", hint="run scripts/setup.sh, or install maven")
        staging = self.jar_dir.with_name("libs.partial")
        shutil.rmtree(staging, ignore_errors=True)
        pom = resources.files("streamml.kafka").joinpath("pom.xml")
        with resources.as_file(pom) as pom_path:
            cmd = [
                mvn, "-q", "-B", "-f", str(pom_path), "dependency:copy-dependencies",
                f"-Dkafka.version={self.settings.kafka_version}", f"-DoutputDirectory={staging}",
                "-DincludeScope=runtime",
            ]  # fmt: skip
            log.info("resolving Apache Kafka %s jars with Maven", self.settings.kafka_version)
            proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if proc.returncode != 0:
            tail = (proc.stdout + proc.stderr).strip().splitlines()[-3:]
            raise BrokerError(
                f"Maven could not resolve Apache Kafka {self.settings.kafka_version}: {' / '.join(tail)}",
                hint="check network access to Maven Central and the kafka_version setting",
            )
        shutil.rmtree(self.jar_dir, ignore_errors=True)
        staging.rename(self.jar_dir)
        marker.touch()
        return self.jar_dir

    # -- state --------------------------------------------------------------------------------------------
    def status(self) -> BrokerInfo:
        """Whether the local broker runs, and where."""
        state = read_state(self.state_file)
        if not state or not alive(int(state["pid"])):  # type: ignore[call-overload]
            return BrokerInfo(running=False, home=str(self.root))
        return BrokerInfo(
            running=True,
            bootstrap=str(state["bootstrap"]),
            pid=int(state["pid"]),  # type: ignore[call-overload]
            version=str(state["version"]),
            home=str(self.root),
            started_at=float(state["started_at"]),  # type: ignore[arg-type]
        )

    # -- start / stop -------------------------------------------------------------------------------------
    def start(self, timeout_s: float = 90.0) -> BrokerInfo:
        """Start the broker detached and wait until it answers a metadata request."""
        current = self.status()
        if current.running:
            return BrokerInfo(**{**asdict(current), "already_running": True})
        java = shutil.which("java")
        if java is None:
            raise BrokerError("Java is not installed", hint="install a Java 17+ runtime (scripts/setup.sh)")
        jars = self.ensure_jars()
        port = self.settings.broker_port or free_port()
        controller_port = self.settings.controller_port or free_port()
        for p in (port, controller_port):
            if not port_free(p):
                raise BrokerError(
                    f"port {p} is already in use",
                    hint="set STREAMML_BROKER_PORT / STREAMML_CONTROLLER_PORT (0 picks a free port)",
                )
        (self.root / "logs").mkdir(parents=True, exist_ok=True)
        properties = self.root / "server.properties"
        properties.write_text(
            _SERVER_PROPERTIES.format(port=port, controller_port=controller_port, data_dir=self.data_dir)
        )
        log4j = self.root / "log4j2.properties"
        log4j.write_text(_LOG4J2)
        classpath = f"{jars}/*"
        jvm = [java, f"-Xmx{self.settings.broker_heap}", f"-Xms{self.settings.broker_heap}",
               "-XX:+UseG1GC", "-XX:MaxGCPauseMillis=20", "-Djava.awt.headless=true",
               f"-Dlog4j2.configurationFile={log4j}", "-cp", classpath]  # fmt: skip
        if not (self.data_dir / "meta.properties").exists():
            self._format(jvm, properties)
        with self.log_file.open("ab") as out:
            proc = subprocess.Popen(
                [*jvm, "kafka.Kafka", str(properties)],
                stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True,
            )  # fmt: skip
        bootstrap = f"127.0.0.1:{port}"
        state = {"pid": proc.pid, "bootstrap": bootstrap, "version": self.settings.kafka_version,
                 "started_at": time.time(), "controller_port": controller_port}  # fmt: skip
        self.state_file.write_text(json.dumps(state))
        try:
            wait_until_ready(bootstrap, timeout_s, alive=lambda: proc.poll() is None)
        except BrokerError as exc:
            terminate(proc.pid, 5, "broker")
            self.state_file.unlink(missing_ok=True)
            raise BrokerError(f"{exc.message}; last log lines: {self.tail(5)}", hint=f"see {self.log_file}") from None
        return self.status()

    def _format(self, jvm: list[str], properties: Path) -> None:
        cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        proc = subprocess.run(
            [*jvm, "kafka.tools.StorageTool", "format", f"--cluster-id={cluster_id}", "-c", str(properties)],
            capture_output=True, text=True, check=False,
        )  # fmt: skip
        if proc.returncode != 0:
            raise BrokerError(f"formatting KRaft storage failed: {(proc.stdout + proc.stderr).strip()[-300:]}")

    def stop(self, timeout_s: float = 30.0) -> bool:
        """Stop gracefully (SIGTERM), forcibly after ``timeout_s``. Returns False if nothing was running."""
        info = self.status()
        if not info.running or info.pid is None:
            self.state_file.unlink(missing_ok=True)
            return False
        terminate(info.pid, timeout_s, "broker")
        self.state_file.unlink(missing_ok=True)
        return True

    def tail(self, lines: int = 50) -> str:
        """The last ``lines`` lines of the log."""
        return tail(self.log_file, lines)


def wait_until_ready(bootstrap: str, timeout_s: float, alive: object = None) -> None:
    """Block until ``bootstrap`` answers a metadata request with at least one broker, or raise BrokerError."""
    admin = AdminClient({"bootstrap.servers": bootstrap, "log_level": 0, "logger": _quiet})  # type: ignore[dict-item]
    deadline = time.monotonic() + timeout_s
    last_error = "no answer"
    while time.monotonic() < deadline:
        if callable(alive) and not alive():
            raise BrokerError(f"the broker process exited during startup ({bootstrap})")
        try:
            metadata = admin.list_topics(timeout=1.0)
            if metadata.brokers:
                return
        except Exception as exc:
            last_error = str(exc)
        time.sleep(0.2)
    raise BrokerError(f"the broker at {bootstrap} was not ready after {timeout_s:.0f} s ({last_error})")


class _QuietLogger(logging.Logger):
    def log(self, *args: object, **kwargs: object) -> None:
        return None


_quiet = _QuietLogger("streamml.kafka.quiet")
