"""The local servers' process plumbing, shared by the Kafka broker and Mosquitto: state files, liveness, a
graceful-then-forced stop, log tails and ports."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import socket
import time
from collections import deque
from pathlib import Path

log = logging.getLogger(__name__)


def read_state(path: Path) -> dict[str, object] | None:
    """The JSON state a server wrote at start, or None when it is missing or unreadable."""
    try:
        state: dict[str, object] = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return state


def alive(pid: int) -> bool:
    """Whether process ``pid`` runs (a zombie child counts as gone)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except OSError:
        return True


def reap(pid: int) -> None:
    """Collect ``pid``'s exit status if it is our child."""
    with contextlib.suppress(ChildProcessError):  # not our child
        os.waitpid(pid, os.WNOHANG)


def terminate(pid: int, timeout_s: float, what: str) -> None:
    """SIGTERM, then SIGKILL after ``timeout_s`` (logged, naming ``what``)."""
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if not alive(pid):
            reap(pid)
            return
        time.sleep(0.05)
    log.warning("%s pid %s did not stop within %.0f s; killing it", what, pid, timeout_s)
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        return
    reap(pid)


def tail(path: Path, lines: int = 50) -> str:
    """The last ``lines`` lines of a log file ('' when it cannot be read)."""
    try:
        with path.open(errors="replace") as f:
            return "".join(deque(f, maxlen=lines)).rstrip()
    except OSError:
        return ""


def free_port() -> int:
    """A TCP port on the loopback interface nobody listens on now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def port_free(port: int) -> bool:
    """Whether a server could listen on ``port`` (as servers do, ignoring sockets in TIME_WAIT)."""
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True
