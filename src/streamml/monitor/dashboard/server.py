"""The dashboard's web server: one page, its static files, and the JSON it polls, read-only.

Starlette on uvicorn. ``/`` is the page, ``/static/...`` its script and style (shipped in the package, no
external assets), ``/api/state`` the :meth:`DashboardState.view` JSON the page redraws from every couple of
seconds, ``/healthz`` a liveness check. :class:`Dashboard` runs it in the foreground (:meth:`Dashboard.run`,
until Ctrl-C) or in a background thread (:meth:`Dashboard.start` / :meth:`Dashboard.stop`).
"""

from __future__ import annotations

import asyncio
import logging
import threading
from pathlib import Path

import orjson
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import FileResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from streamml.config import Settings
from streamml.errors import StreamMLError
from streamml.monitor.dashboard.state import DashboardFeed, DashboardState
from streamml.runtime.topics import MODELS_TOPIC, MONITOR_ALERTS_TOPIC, MONITOR_METRICS_TOPIC
from streamml.serve.server import listen

log = logging.getLogger(__name__)

STATIC = Path(__file__).with_name("static")
#: how long :meth:`Dashboard.start` waits for the server to listen
START_TIMEOUT_S = 30.0


def create_app(state: DashboardState) -> Starlette:
    """The dashboard's routes over ``state``."""

    async def page(request: Request) -> Response:
        return FileResponse(STATIC / "index.html", headers={"Cache-Control": "no-cache"})

    async def api_state(request: Request) -> Response:
        body = orjson.dumps(state.view(), option=orjson.OPT_NON_STR_KEYS)
        return Response(body, media_type="application/json", headers={"Cache-Control": "no-store"})

    async def healthz(request: Request) -> Response:
        return Response(b'{"status":"ok"}', media_type="application/json")

    return Starlette(
        routes=[
            Route("/", page),
            Route("/api/state", api_state),
            Route("/healthz", healthz),
            Mount("/static", StaticFiles(directory=STATIC), name="static"),
        ]
    )


class Dashboard:
    """The feed following the topics and the web server showing them, on ``host:port`` (0: a free port)."""

    def __init__(
        self,
        settings: Settings,
        host: str = "127.0.0.1",
        port: int = 8050,
        *,
        metrics_topic: str = MONITOR_METRICS_TOPIC,
        alerts_topic: str = MONITOR_ALERTS_TOPIC,
        control_topic: str = MODELS_TOPIC,
    ) -> None:
        self.host = host
        self.state = DashboardState()
        self.feed = DashboardFeed(
            settings, self.state, metrics_topic=metrics_topic, alerts_topic=alerts_topic, control_topic=control_topic
        )
        self._sock = listen(host, port, option="--port", backlog=128)
        self.port: int = self._sock.getsockname()[1]
        self._server = uvicorn.Server(
            uvicorn.Config(create_app(self.state), lifespan="off", log_config=None, access_log=False)
        )
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}/"

    def run(self) -> None:
        """Serve in the foreground until interrupted (uvicorn handles SIGINT and SIGTERM)."""
        self.feed.start()
        try:
            asyncio.run(self._server.serve(sockets=[self._sock]))
        finally:
            self.feed.stop()
            self._sock.close()

    def start(self) -> Dashboard:
        """Serve in a background thread; returns once the server listens."""
        self.feed.start()
        self._thread = threading.Thread(
            target=lambda: asyncio.run(self._server.serve(sockets=[self._sock])), name="dashboard", daemon=True
        )
        self._thread.start()
        deadline = START_TIMEOUT_S
        while not self._server.started and deadline > 0 and self._thread.is_alive():
            self._thread.join(0.05)
            deadline -= 0.05
        if not self._server.started:
            self.stop()
            raise StreamMLError(f"the dashboard did not start on {self.url}")
        return self

    def stop(self) -> None:
        self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(10)
        self.feed.stop()
        self._sock.close()

    def __enter__(self) -> Dashboard:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
