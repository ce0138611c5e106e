"""Runs the persistent queries of the catalog in this process, one thread each, and keeps them running.

The runner follows the catalog topic: queries created later start, terminated ones stop. A query that fails
is restarted with backoff (its state comes back from its changelog); its error stays visible in ``status``.
A query whose error policy says ``fail`` stays stopped, with the reason.

A watchdog checks every worker at each refresh: one stuck in a transactional call past its deadline (as
librdkafka can be while a group coordinator is unavailable) is abandoned and replaced by a fresh worker
that fences its transaction, exactly as after a crash. Shutdown is bounded in time.
Several runners (processes or machines) running the same queries share the partitions through the queries'
consumer groups.

Constructing a runner touches nothing on the cluster: :meth:`Runner.start` (called by :meth:`Runner.run`)
creates the deployment's internal topics where they are missing (see :mod:`streamml.runtime.topics`) and
starts following the model control topic; each query creates its own topics when it starts.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from streamml.config import Settings
from streamml.kafka import Admin, client_config
from streamml.runtime.catalog_store import CatalogFollower, CatalogState, CatalogStore, engine_from_state
from streamml.runtime.control import ControlFollower, follow_control
from streamml.runtime.metrics import QueryMetrics
from streamml.runtime.observe import StatusPublisher, serve_metrics
from streamml.runtime.options import RuntimeOptions
from streamml.runtime.predict import ModelProvider, provider_for
from streamml.runtime.query import PersistentQuery, QueryFailed
from streamml.runtime.topics import ensure_catalog_topic
from streamml.sql import SqlEngine

log = logging.getLogger(__name__)

RESTART_BACKOFF_S = (1.0, 2.0, 5.0, 10.0, 30.0)


#: how long shutdown waits for the queries to commit and leave their groups, all together
SHUTDOWN_TIMEOUT_S = 30.0


@dataclass
class _Running:
    """One query this runner runs: its supervising thread and the worker it runs now."""

    thread: threading.Thread
    stop: threading.Event
    metrics: QueryMetrics
    start: Callable[[], _Running]
    query: PersistentQuery | None = None
    #: the statement it runs (``CREATE OR REPLACE`` changes it: the query restarts with the new one)
    text: str = ""


@dataclass
class Runner:
    """Runs ``only`` (default: every) persistent query of the catalog until :meth:`stop`."""

    settings: Settings
    options: RuntimeOptions = field(default_factory=RuntimeOptions)
    only: Iterable[str] | None = None
    refresh_s: float = 2.0
    #: adds user or model functions to each engine that plans the stored queries
    functions_hook: Callable[[SqlEngine], None] | None = None
    #: serve Prometheus metrics on this port (0: any free port; None: not at all)
    metrics_port: int | None = None
    #: publish status records for ``streamml status``
    publish_status: bool = True

    def __post_init__(self) -> None:
        self.store = CatalogStore(self.settings)
        self.provider: ModelProvider | None = None
        self.follower: ControlFollower | None = None
        if self.functions_hook is None:  # PREDICT over the registry, swapping versions on promotion
            self.provider, _ = provider_for(self.settings, follow=False)  # follows from start()
            self.functions_hook = self.provider.install
        self.publisher: StatusPublisher | None = None
        self.port: int | None = None
        self._running: dict[str, _Running] = {}
        self._catalog: CatalogFollower | None = None
        self._stopped = threading.Event()
        self._wanted = None if self.only is None else {q.upper() for q in self.only}
        self._started = False

    def start(self) -> Runner:
        """Create the catalog topic where it is missing and follow the control topic (from its end: every
        promotion published after this returns is applied); once, later calls do nothing."""
        if not self._started:
            self._started = True
            ensure_catalog_topic(Admin(client_config(self.settings), timeout_s=self.settings.request_timeout_s),
                                 self.settings)  # fmt: skip
            if self.provider is not None:
                self.follower = follow_control(self.settings, self.provider.on_event)
        return self

    def run(self, stop: threading.Event | None = None) -> None:
        """Start the queries and keep them in line with the catalog until ``stop`` (or :meth:`stop`)."""
        stop = stop or self._stopped
        self.start()
        if self.metrics_port is not None:
            self.port = serve_metrics(self.metrics_port, self.status)
            log.info("Prometheus metrics on port %s", self.port)
        if self.publish_status:
            self.publisher = StatusPublisher(self.settings, self.snapshot).start()
        try:
            while not stop.is_set() and not self._stopped.is_set():
                self.sync()
                self.watch()
                stop.wait(self.refresh_s)
        finally:
            self.shutdown()

    def watch(self) -> None:
        """Replace every worker stuck in a transactional call past its deadline."""
        for query_id, running in list(self._running.items()):
            query = running.query
            reason = query.stalled() if query is not None else None
            if query is None or reason is None:
                continue
            log.error("query %s: worker stuck (%s); replacing it", query_id, reason)
            running.stop.set()
            running.metrics.error = f"worker replaced: {reason}"
            running.metrics.replaced += 1
            # closing its consumer can block while the cluster is away: not on the runner's thread
            threading.Thread(target=query.abandon, name=f"abandon-{query_id}", daemon=True).start()
            self._running[query_id] = running.start()

    def sync(self) -> None:
        """Start queries that should run and stop those that were terminated (a no-op while the catalog stays
        as it was: the follower costs one local poll)."""
        if self._catalog is None:
            self._catalog = self.store.follow()
            state: CatalogState | None = self._catalog.state()
        else:
            state = self._catalog.changed()
        if state is None:
            return
        engine = SqlEngine.with_plugins()
        if self.functions_hook is not None:
            self.functions_hook(engine)
        engine = engine_from_state(state, engine)
        wanted = {q for q in engine.queries if self._wanted is None or q.upper() in self._wanted}
        for query_id in list(self._running):
            if query_id not in wanted:
                log.info("query %s was terminated; stopping it", query_id)
                self._stop_one(query_id)
            elif engine.queries[query_id].text != self._running[query_id].text:
                log.info("query %s was replaced; restarting it with its new statement", query_id)
                self._stop_one(query_id)  # it commits what it has: the new statement goes on from there
        for query_id in sorted(wanted - set(self._running)):
            plan = engine.queries[query_id]
            assert plan.sink is not None
            sink = engine.catalog.get(plan.sink.name)
            self._running[query_id] = self._start(query_id, plan, sink, QueryMetrics(query_id), dict(state.properties))

    def _start(self, query_id, plan, sink, metrics, properties) -> _Running:  # type: ignore[no-untyped-def]
        """A supervising thread for one query, started."""
        stop = threading.Event()
        running = _Running(
            threading.Thread(target=lambda: self._supervise(running, query_id, plan, sink, properties),
                             name=f"query-{query_id}", daemon=True),
            stop,
            metrics,
            start=lambda: self._start(query_id, plan, sink, metrics, properties),
            text=plan.text,
        )  # fmt: skip
        running.thread.start()
        return running

    def _supervise(self, running: _Running, query_id, plan, sink, properties) -> None:  # type: ignore[no-untyped-def]
        stop, metrics = running.stop, running.metrics
        failures = 0
        while not stop.is_set():
            started = time.monotonic()
            query: PersistentQuery | None = None
            try:
                query = PersistentQuery(
                    query_id, plan, sink, self.settings, self.options, metrics, self.provider, properties
                )
                running.query = query
                query.run(stop)
                if not query.abandoned:
                    metrics.state = "STOPPED" if stop.is_set() else "DONE"
                return
            except QueryFailed as exc:  # its error policy says stop: restarting would fail on the same record
                metrics.state, metrics.error = "FAILED", exc.message
                log.error("query %s failed and stays stopped: %s", query_id, exc.message)
                return
            except Exception as exc:
                if query is not None and query.abandoned:
                    return  # replaced: its successor reports for the query now
                failures = 0 if time.monotonic() - started > 60 else failures + 1
                metrics.state, metrics.error = "ERROR", str(exc)
                delay = RESTART_BACKOFF_S[min(failures, len(RESTART_BACKOFF_S) - 1)]
                log.error("query %s failed (%s); restarting in %.0f s", query_id, exc, delay)
                stop.wait(delay)

    def _stop_one(self, query_id: str, timeout_s: float = 30.0) -> None:
        running = self._running.pop(query_id)
        running.stop.set()
        running.thread.join(timeout_s)

    def status(self) -> list[QueryMetrics]:
        """Metrics of the queries this runner runs."""
        return [r.metrics for r in self._running.values()]

    def snapshot(self) -> dict[str, object]:
        """This runner's status, as published for ``streamml status``."""
        return {"queries": [m.snapshot() for m in self.status()], "refusals": self.refusals, "metrics_port": self.port}

    @property
    def refusals(self) -> list[str]:
        """Model versions this runner refused to serve, and why."""
        return list(self.provider.refusals) if self.provider is not None else []

    def stop(self) -> None:
        self._stopped.set()

    def shutdown(self, timeout_s: float = SHUTDOWN_TIMEOUT_S) -> None:
        """Stop every query: each finishes its batch, commits and leaves its group, within ``timeout_s``
        for all of them (a worker still stuck then is left behind; its transaction is fenced on restart)."""
        for running in self._running.values():
            running.stop.set()
        deadline = time.monotonic() + timeout_s
        for query_id, running in self._running.items():
            running.thread.join(max(0.0, deadline - time.monotonic()))
            if running.thread.is_alive():
                log.error("query %s did not stop within %.0f s; leaving it behind", query_id, timeout_s)
        self._running.clear()
        if self._catalog is not None:
            self._catalog.close()
            self._catalog = None
        if self.follower is not None:
            self.follower.stop()
        if self.publisher is not None:
            self.publisher.stop()
