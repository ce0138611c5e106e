"""The local MQTT broker: Debian's Mosquitto, run under ``Settings.home / "mosquitto"`` for devices and bridges.

Connected devices (cars, sensors) speak MQTT, not Kafka; the MQTT bridge (``streamml.ingest.mqtt``) moves
their messages into Kafka. This module gives that a real broker with the same lifecycle as the local Kafka
broker (:mod:`streamml.kafka.broker`): configuration, persistence, pid state and log live under
``Settings.home / "mosquitto"``; ``start`` is idempotent and waits until the broker answers an MQTT CONNECT;
``stop`` is graceful (SIGTERM, which also saves the persistence file), forced after a timeout.

The configuration is written for a bridge that acknowledges only after Kafka confirmed a write: the in-flight
window (``max_inflight_messages``, default 20) and the queue kept for an offline persistent session
(``max_queued_messages``, default 1000, beyond which Mosquitto drops messages) are raised.
"""

from __future__ import annotations

import json
import logging
import os
import pwd
import shutil
import socket
import subprocess
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from streamml.config import Settings
from streamml.errors import BrokerError
from streamml.kafka.process import alive, free_port, port_free, read_state, tail, terminate

log = logging.getLogger(__name__)

#: where Debian's ``mosquitto`` package installs the broker
MOSQUITTO = "/usr/sbin/mosquitto"
#: unacknowledged QoS 1/2 messages Mosquitto sends one MQTT 3.1.1 client at once (MQTT 5 clients say theirs)
MAX_INFLIGHT = 1000
#: messages kept per session beyond the in-flight window, e.g. while a bridge restarts
MAX_QUEUED = 1_000_000

_CONFIG = """\
# written by streamml: 'streamml mqtt start' rewrites this file
listener {port} 127.0.0.1
allow_anonymous true
persistence true
persistence_location {data_dir}/
autosave_interval 30
max_inflight_messages {max_inflight}
max_queued_messages {max_queued}
max_queued_bytes 0
log_dest file {log_file}
log_type error
log_type warning
log_type notice
log_type information
connection_messages true
log_timestamp_format %Y-%m-%dT%H:%M:%S
user {user}
"""

# MQTT 3.1.1 CONNECT: protocol "MQTT" level 4, clean session, keep-alive 10 s, empty client id
_CONNECT = b"\x10\x0c\x00\x04MQTT\x04\x02\x00\x0a\x00\x00"
_CONNACK_OK = b"\x20\x02\x00\x00"


@dataclass(frozen=True)
class MosquittoInfo:
    """What ``start`` and ``status`` report about the local MQTT broker."""

    running: bool
    address: str | None = None
    pid: int | None = None
    version: str | None = None
    home: str | None = None
    started_at: float | None = None
    already_running: bool = False

    @property
    def host_port(self) -> tuple[str, int] | None:
        """``(host, port)`` of the listener, when running."""
        if not self.address:
            return None
        host, _, port = self.address.rpartition(":")
        return host, int(port)


class LocalMosquitto:
    """Lifecycle of the local Mosquitto broker described by ``settings``."""

    def __init__(self, settings: Settings, executable: str | None = None) -> None:
        self.settings = settings
        self.root = settings.home.resolve() / "mosquitto"
        self.data_dir = self.root / "data"
        self.config_file = self.root / "mosquitto.conf"
        self.log_file = self.root / "logs" / "mosquitto.log"
        self.state_file = self.root / "mosquitto.json"
        self.executable = executable or shutil.which("mosquitto") or MOSQUITTO

    # -- state --------------------------------------------------------------------------------------------
    def status(self) -> MosquittoInfo:
        """Whether the local MQTT broker runs, and where."""
        state = read_state(self.state_file)
        if not state or not alive(int(state["pid"])):  # type: ignore[call-overload]
            return MosquittoInfo(running=False, home=str(self.root))
        return MosquittoInfo(
            running=True,
            address=str(state["address"]),
            pid=int(state["pid"]),  # type: ignore[call-overload]
            version=str(state["version"]),
            home=str(self.root),
            started_at=float(state["started_at"]),  # type: ignore[arg-type]
        )

    def version(self) -> str:
        """The installed Mosquitto's version (``2.0.11``), or raise :class:`BrokerError` when it is missing."""
        if not Path(self.executable).is_file():
            raise BrokerError(
                f"Mosquitto is not installed ({self.executable} is missing)",
                hint="run scripts/setup.sh, or: apt-get install mosquitto",
            )
        proc = subprocess.run([self.executable, "-h"], capture_output=True, text=True, check=False)
        for word in (proc.stdout + proc.stderr).split():
            if word[:1].isdigit() and "." in word:
                return word
        return "unknown"

    # -- start / stop -------------------------------------------------------------------------------------
    def start(self, timeout_s: float = 15.0) -> MosquittoInfo:
        """Start Mosquitto detached and wait until it accepts an MQTT connection."""
        current = self.status()
        if current.running:
            return MosquittoInfo(**{**asdict(current), "already_running": True})
        version = self.version()
        port = self.settings.mqtt_port or free_port()
        if not port_free(port):
            raise BrokerError(f"port {port} is already in use", hint="set STREAMML_MQTT_PORT (0 picks a free port)")
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.log_file.parent.mkdir(parents=True, exist_ok=True)
        self.config_file.write_text(
            _CONFIG.format(
                port=port,
                data_dir=self.data_dir,
                log_file=self.log_file,
                max_inflight=MAX_INFLIGHT,
                max_queued=MAX_QUEUED,
                user=pwd.getpwuid(os.geteuid()).pw_name,  # run as root, Mosquitto would switch to 'mosquitto'
            )
        )
        with (self.root / "logs" / "stdout.log").open("ab") as out:
            proc = subprocess.Popen(
                [self.executable, "-c", str(self.config_file)],
                stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True,
            )  # fmt: skip
        address = f"127.0.0.1:{port}"
        state = {"pid": proc.pid, "address": address, "version": version, "started_at": time.time()}
        self.state_file.write_text(json.dumps(state))
        try:
            wait_until_ready("127.0.0.1", port, timeout_s, alive=lambda: proc.poll() is None)
        except BrokerError as exc:
            terminate(proc.pid, 5, "Mosquitto")
            self.state_file.unlink(missing_ok=True)
            raise BrokerError(f"{exc.message}; last log lines: {self.tail(5)}", hint=f"see {self.log_file}") from None
        log.info("Mosquitto %s listening at %s (pid %s)", version, address, proc.pid)
        return self.status()

    def stop(self, timeout_s: float = 10.0) -> bool:
        """Stop gracefully (SIGTERM), forcibly after ``timeout_s``. Returns False if nothing was running."""
        info = self.status()
        if not info.running or info.pid is None:
            self.state_file.unlink(missing_ok=True)
            return False
        terminate(info.pid, timeout_s, "Mosquitto")
        self.state_file.unlink(missing_ok=True)
        return True

    def tail(self, lines: int = 50) -> str:
        """The last ``lines`` lines of the log."""
        return tail(self.log_file, lines)


def wait_until_ready(host: str, port: int, timeout_s: float, alive: object = None) -> None:
    """Block until ``host:port`` answers an MQTT CONNECT with an accepting CONNACK, or raise BrokerError."""
    deadline = time.monotonic() + timeout_s
    last_error = "no answer"
    while time.monotonic() < deadline:
        if callable(alive) and not alive():
            raise BrokerError(f"Mosquitto exited during startup ({host}:{port})")
        try:
            with socket.create_connection((host, port), timeout=1.0) as s:
                s.sendall(_CONNECT)
                answer = s.recv(4)
                if answer == _CONNACK_OK:
                    s.sendall(b"\xe0\x00")  # DISCONNECT
                    return
                last_error = f"unexpected answer {answer!r}"
        except OSError as exc:
            last_error = str(exc)
        time.sleep(0.05)
    raise BrokerError(f"Mosquitto at {host}:{port} was not ready after {timeout_s:.0f} s ({last_error})")


def parse_address(text: str, default_port: int = 1883) -> tuple[str, int]:
    """``HOST[:PORT]`` -> ``(host, port)``; raises :class:`BrokerError` for a malformed address."""
    host, sep, port_text = text.strip().rpartition(":")
    if not sep:
        host, port_text = text.strip(), str(default_port)
    try:
        port = int(port_text)
    except ValueError:
        port = -1
    if not host or not 0 < port < 65536:
        raise BrokerError(f"invalid MQTT address '{text}'", hint="use HOST:PORT, e.g. 127.0.0.1:1883")
    return host, port
