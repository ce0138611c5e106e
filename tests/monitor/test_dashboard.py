"""The dashboard: its bounded view (broker-free), its HTTP routes, and the live page in headless Chromium
against the real broker."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import socket
import subprocess
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from streamml.config import Settings
from streamml.kafka import Admin, Producer, client_config
from streamml.models.events import ModelEvent
from streamml.monitor.dashboard import Dashboard, DashboardState, create_app
from streamml.monitor.dashboard.state import MAX_ITEMS, MAX_WINDOWS
from streamml.runtime.control import publish_events
from streamml.runtime.session import wait_for
from streamml.runtime.topics import status_topic

CHROMIUM = shutil.which("chromium") or ("/usr/bin/chromium" if os.path.exists("/usr/bin/chromium") else None)


def window(version: int, end_ms: int, accuracy: float = 0.9, model: str = "fraud", **extra: Any) -> dict[str, Any]:
    """A metrics record in the monitor's shape."""
    return {
        "monitor": model, "model": model, "version": version, "window_start_ms": end_ms - 10_000,
        "window_end_ms": end_ms, "count": 100, "labelled": 80, "unlabelled": 20, "evaluated": 80,
        "accuracy": accuracy, "precision": 0.8, "recall": 0.7, "f1": 0.75, "roc_auc": 0.93, "pr_auc": 0.6,
        "ece": 0.05, "mean_score": 0.2, "threshold": 0.5, "positive": "1", "average": "binary", "classes": ["0", "1"],
        "calibration": [], "drift": {"features": {
            "amount": {"feature": "amount", "kind": "numeric", "psi": 0.31, "js": 0.2, "drifted": True},
            "hour": {"feature": "hour", "kind": "numeric", "psi": 0.02, "js": 0.01, "drifted": False},
        }, "score": None},
        "drift_psi_max": 0.31, "drift_js_max": 0.2, "drifted_features": 1, "role": "live", **extra,
    }  # fmt: skip


def alert(version: int, rule: str, state: str, end_ms: int = 5000) -> dict[str, Any]:
    return {"model": "fraud", "version": version, "window_start_ms": end_ms - 10_000, "window_end_ms": end_ms,
            "rule": rule, "metric": rule, "value": 0.4, "threshold": 0.2, "state": state, "message": f"{rule} {state}"}  # fmt: skip


def promote(version: int, previous: int, when_ms: int, model: str = "fraud") -> ModelEvent:
    return ModelEvent(action="promote", model=model, version=version, alias="production", previous_version=previous,
                      timestamp=datetime.fromtimestamp(when_ms / 1000, UTC))  # fmt: skip


# ---- the view, broker-free ----


def test_windows_are_ordered_by_end_and_a_window_seen_again_replaces_the_old_one() -> None:
    state = DashboardState()
    state.add_windows([window(1, 3000), window(1, 1000), window(2, 2000), window(1, 2000, accuracy=0.5)])
    state.add_windows([window(1, 2000, accuracy=0.6)])
    (model,) = state.view()["models"]
    v1, v2 = model["versions"]
    assert (v1["version"], v2["version"]) == (1, 2)
    assert [w["window_end_ms"] for w in v1["windows"]] == [1000, 2000, 3000]
    assert [w["accuracy"] for w in v1["windows"]] == [0.9, 0.6, 0.9]
    assert v1["features"]["amount"] == {"psi": 0.31, "js": 0.2, "drifted": True, "kind": "numeric"}
    assert v1["features_window_end_ms"] == 3000


def test_each_version_keeps_only_its_latest_windows() -> None:
    state = DashboardState()
    state.add_windows(window(1, 1000 * i) for i in range(MAX_WINDOWS + 50, 0, -1))
    windows = state.view()["models"][0]["versions"][0]["windows"]
    assert len(windows) == MAX_WINDOWS
    assert windows[0]["window_end_ms"] == 51_000 and windows[-1]["window_end_ms"] == (MAX_WINDOWS + 50) * 1000


def test_missing_and_non_finite_metrics_read_as_null() -> None:
    state = DashboardState()
    state.add_windows([window(1, 1000, accuracy=float("nan"), roc_auc=None), {"model": "fraud"}, {"version": 1}])
    (w,) = state.view()["models"][0]["versions"][0]["windows"]
    assert w["accuracy"] is None and w["roc_auc"] is None and w["f1"] == 0.75


def test_promotions_become_markers_and_every_event_is_listed_newest_first() -> None:
    state = DashboardState()
    state.add_events([orjson.loads(promote(2, 1, 60_000).to_json())])
    state.add_events([
        {"action": "rollback", "model": "fraud", "version": 1, "alias": "production", "timestamp": 90.0},
        {"action": "candidate_rejected", "model": "fraud", "version": 3, "reason": "F1 0.61 < 0.70",
         "timestamp": "2026-12-03T14:00:00+00:00"},
        {"model": "fraud"},  # not an event: no action
    ])  # fmt: skip
    view = state.view()
    (model,) = view["models"]  # a model with events and no windows yet still gets its charts
    assert model["versions"] == []
    assert [(m["label"], m["time_ms"]) for m in model["markers"]] == [
        ("v2 promoted", 60_000),
        ("v1 rolled back", 90_000),
    ]
    assert [e["action"] for e in view["events"]] == ["candidate_rejected", "rollback", "promote"]
    assert view["events"][0]["detail"] == "F1 0.61 < 0.70"
    assert view["events"][0]["time_ms"] == int(datetime(2026, 12, 3, 14, tzinfo=UTC).timestamp() * 1000)
    assert view["events"][2]["previous_version"] == 1


def test_alerts_are_bounded_and_only_unresolved_ones_are_firing() -> None:
    state = DashboardState()
    state.add_alerts(
        [alert(1, "drift_psi_max", "FIRING"), alert(1, "accuracy", "FIRING"), alert(2, "accuracy", "FIRING")]
    )
    state.add_alerts([alert(1, "accuracy", "RESOLVED", end_ms=6000)])
    view = state.view()
    assert [(a["version"], a["rule"]) for a in view["firing"]] == [(1, "drift_psi_max"), (2, "accuracy")]
    assert view["alerts"][0]["state"] == "RESOLVED"
    state.add_alerts(alert(1, "accuracy", "FIRING", end_ms=i) for i in range(MAX_ITEMS + 10))
    assert len(state.view()["alerts"]) == MAX_ITEMS


def test_worker_status_is_sampled_per_query_over_live_workers_only() -> None:
    def worker(name: str, seen: float, rate: float, p99: float) -> dict[str, Any]:
        query = {"query": "CSAS_SCORED_0", "state": "RUNNING", "records_in": 1000, "records_out": 990,
                 "dead_letters": 3, "rate_in": rate, "lag": {"0": 5, "1": 7}, "model_versions": {"fraud": "fraud:2"},
                 "latency_p50_ms": 4.0, "latency_p95_ms": 9.0, "latency_p99_ms": p99}  # fmt: skip
        return {"worker": name, "time": seen, "queries": [query]}

    state = DashboardState()
    workers = [worker("a/1", 100.0, 50.0, 20.0), worker("b/2", 99.0, 30.0, 40.0), worker("c/3", 1.0, 999.0, 900.0)]
    state.set_workers(workers, now=100.0)
    state.set_workers(workers[:1], now=101.0)
    view = state.view()
    assert [(q["worker"], q["alive"], q["lag"]) for q in view["queries"]] == [("a/1", True, 12)]
    first, second = view["ops"]["CSAS_SCORED_0"]
    assert first == {"time_ms": 100_000, "rate_in": 80.0, "lag": 24, "dead_letters": 6, "records_in": 2000,
                     "latency_p50_ms": 4.0, "latency_p95_ms": 9.0, "latency_p99_ms": 40.0}  # fmt: skip
    assert second["rate_in"] == 50.0 and second["time_ms"] == 101_000


def test_routes_serve_the_page_its_assets_the_state_and_health() -> None:
    state = DashboardState()
    state.add_windows([window(1, 1000)])

    async def get_all(*paths: str) -> list[httpx.Response]:
        transport = httpx.ASGITransport(app=create_app(state))
        async with httpx.AsyncClient(transport=transport, base_url="http://dashboard") as client:
            return [await client.get(p) for p in paths]

    page, script, style, api, health, missing = asyncio.run(
        get_all("/", "/static/app.js", "/static/style.css", "/api/state", "/healthz", "/static/missing.js")
    )
    assert page.status_code == 200 and "/static/app.js" in page.text
    assert "http" not in page.text  # no external assets
    assert script.status_code == 200 and "lineChart" in script.text
    assert style.headers["content-type"].startswith("text/css")
    assert api.json()["models"][0]["versions"][0]["windows"][0]["accuracy"] == 0.9
    assert health.json() == {"status": "ok"}
    assert missing.status_code == 404


# ---- the command ----


def test_the_command_serves_until_interrupted(cli: Callable[..., Any], bootstrap: str, tmp_path: Path) -> None:
    from tests.conftest import STREAMML

    env = {k: v for k, v in os.environ.items() if not k.startswith("STREAMML_")}
    env.update(STREAMML_BOOTSTRAP=bootstrap, STREAMML_HOME=str(tmp_path / "home"))
    proc = subprocess.Popen([STREAMML, "dashboard", "--port", "0"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=env)  # fmt: skip
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert line.startswith("dashboard: http://127.0.0.1:"), line
        url = line.split()[1]
        assert wait_for(lambda: _healthy(url), 30)
    finally:
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=30)
    assert proc.returncode in (0, 130) and "Traceback" not in err


def test_a_port_in_use_is_one_clear_error(cli: Callable[..., Any]) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        proc = cli("dashboard", "--port", str(busy.getsockname()[1]), check=False)
    assert proc.returncode != 0
    assert "cannot listen on 127.0.0.1" in proc.stderr and "Traceback" not in proc.stderr


def _healthy(url: str) -> bool:
    try:
        return httpx.get(url + "healthz", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


# ---- the live page, against the real broker, in headless Chromium ----


@pytest.mark.skipif(CHROMIUM is None, reason="Chromium is not installed (scripts/setup.sh installs Debian's chromium)")
def test_the_page_draws_the_topics_live(
    kafka_settings: Settings, admin: Admin, unique: Callable[[str], str], tmp_path: Path
) -> None:
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is in the dev extra")
    metrics, alerts, control = unique("metrics"), unique("alerts"), unique("control")
    model = unique("fraud")
    for t in (metrics, alerts):
        admin.create_topic(t, partitions=1)
    base = int(datetime.now(UTC).timestamp() * 1000) - 120_000
    v1 = [window(1, base + i * 10_000, 0.9 - 0.01 * i, model=model) for i in range(1, 6)]
    v2 = [window(2, base + 60_000 + i * 10_000, 0.95, model=model, role="live") for i in range(1, 5)]
    config = client_config(kafka_settings)

    def produce(topic: str, records: list[dict[str, Any]]) -> None:
        with Producer(config) as producer:
            keys = [f"{r.get('monitor', r['model'])}/{r['version']}".encode() for r in records]
            producer.produce_batch(topic, [orjson.dumps(r) for r in records], keys)

    produce(metrics, v1 + v2)
    produce(alerts, [{**alert(1, "drift_psi_max", "FIRING", end_ms=base + 50_000), "model": model}])
    publish_events(kafka_settings, [promote(2, 1, base + 55_000, model=model)], topic=control)
    settings = kafka_settings.model_copy(update={"service_id": unique("svc")})  # a status topic of its own
    query = {"query": "CSAS_SCORED_0", "state": "RUNNING", "records_in": 5000, "records_out": 4990, "dead_letters": 2,
             "rate_in": 812.5, "lag": {"0": 40}, "model_versions": {model: f"{model}:2"},
             "latency_p50_ms": 3.0, "latency_p95_ms": 8.0, "latency_p99_ms": 15.0}  # fmt: skip
    status = status_topic(settings.service_id)
    admin.create_topic(status, partitions=1)
    with Producer(config) as producer:
        record = {"worker": "host/1", "time": datetime.now(UTC).timestamp(), "queries": [query]}
        producer.produce_batch(status, [orjson.dumps(record)], [b"host/1"])

    accuracy_points = "document.querySelector('svg[data-chart=accuracy]')?.dataset.points"
    with (
        Dashboard(settings, "127.0.0.1", 0, metrics_topic=metrics, alerts_topic=alerts, control_topic=control) as board,
        sync_api.sync_playwright() as pw,
    ):
        browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.goto(board.url + "?refresh=300")
            page.wait_for_function(f"Number({accuracy_points}) === 9", timeout=60_000)
            page.wait_for_selector("svg[data-chart=accuracy] g.marker[data-label='v2 promoted']", timeout=30_000)
            assert page.locator("svg[data-chart=accuracy] path.series").count() == 2
            assert page.locator("#psi td", has_text="amount").count() == 1
            page.wait_for_selector("#firing .badge.FIRING", timeout=30_000)
            assert page.locator("#events td", has_text="promote").count() == 1
            page.wait_for_function("Number(document.querySelector('svg[data-chart=rate_in]')?.dataset.points) > 0")
            assert page.locator("#queries td", has_text="CSAS_SCORED_0").count() == 1
            assert page.evaluate("document.querySelectorAll('link[href^=http], script[src^=http]').length") == 0
            page.evaluate("window.sameDocument = true")  # a reload would lose it

            produce(metrics, [window(2, base + 110_000, 0.5, model=model)])
            page.wait_for_function(f"Number({accuracy_points}) === 10", timeout=60_000)
            assert page.evaluate("window.sameDocument === true")
            page.screenshot(path=str(tmp_path / "dashboard.png"), full_page=True)
        finally:
            browser.close()
    assert (tmp_path / "dashboard.png").stat().st_size > 10_000
