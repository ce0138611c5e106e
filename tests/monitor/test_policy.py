"""The retraining loop: the decision broker-free, then the whole loop on the real broker and runner.

The integration cases score a stream with ``m:1`` (a logistic classifier), let the loop retrain ``m`` from the
same stream, score the candidate in shadow beside it while labels arrive late, and check the decision: a
candidate trained on the true relation beats a version trained on inverted labels and is promoted; one no
better than a good version in force is rejected, with its reason, and the alias stays.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pyarrow as pa
import pytest

from streamml.config import Settings
from streamml.errors import InputError
from streamml.kafka import BatchConsumer, Producer, client_config
from streamml.models.card import Lineage
from streamml.models.registry import Registry
from streamml.models.training import train_table
from streamml.monitor.alerts import Alert, AlertState
from streamml.monitor.policy import RetrainingLoop, RetrainPolicy, compare, shadow_statement
from streamml.monitor.spec import MonitorSpec, publish_monitor, read_monitors
from streamml.monitor.supervisor import MonitorSupervisor
from streamml.runtime.control import latest_events, publish_events
from streamml.runtime.session import Session, wait_for
from tests.runtime.conftest import produce_table, running


def _window(start: int, value: float | None, evaluated: int) -> dict[str, Any]:
    return {"window_start_ms": start, "f1": value, "evaluated": evaluated}


# -- the decision ---------------------------------------------------------------------------------------------


def test_compare_weights_common_windows_by_evaluated_rows() -> None:
    live = {0: _window(0, 0.5, 100), 10: _window(10, 0.9, 300), 20: _window(20, 0.1, 50)}
    shadow = {10: _window(10, 0.95, 100), 20: _window(20, 0.6, 300), 30: _window(30, 1.0, 1000)}
    result = compare(live, shadow, metric="f1", margin=0.01, min_windows=2, min_labelled=100)
    assert result.windows == 2  # only windows 10 and 20 are on both sides
    assert result.current == pytest.approx((0.9 * 300 + 0.1 * 50) / 350)
    assert result.candidate == pytest.approx((0.95 * 100 + 0.6 * 300) / 400)
    assert result.labelled == 350
    # unweighted the candidate would win (0.775 vs 0.5); weighted by its rows it is worse
    assert result.decided and not result.promote
    assert "candidate" in result.reason and "0.6875" in result.reason


def test_compare_promotes_only_when_better_by_the_margin() -> None:
    live = {w: _window(w, 0.80, 100) for w in (0, 10, 20)}
    for candidate, margin, promote in ((0.805, 0.01, False), (0.81, 0.01, True), (0.80, 0.0, True), (0.7, 0, False)):
        shadow = {w: _window(w, candidate, 100) for w in (0, 10, 20)}
        result = compare(live, shadow, metric="f1", margin=margin, min_windows=3, min_labelled=300)
        assert result.decided
        assert result.promote is promote, (candidate, margin)


def test_compare_waits_for_windows_and_labelled_rows() -> None:
    live = {w: _window(w, 0.5, 40) for w in (0, 10, 20, 30)}
    shadow = {w: _window(w, 0.9, 40) for w in (0, 10, 20, 30)}
    shadow[30] = _window(30, None, 0)  # no labels in that window: not usable
    assert not compare(live, shadow, metric="f1", margin=0.01, min_windows=4, min_labelled=0).decided
    assert not compare(live, shadow, metric="f1", margin=0.01, min_windows=3, min_labelled=121).decided
    assert compare(live, shadow, metric="f1", margin=0.01, min_windows=3, min_labelled=120).decided
    # windows before the candidate's training data ended do not count
    late = compare(live, shadow, metric="f1", margin=0.01, min_windows=3, min_labelled=0, since_ms=10)
    assert (late.windows, late.decided) == (2, False)


def test_shadow_statement_pins_the_model_and_retargets_the_sink() -> None:
    live = ("CREATE STREAM scores WITH (KAFKA_TOPIC='scores', VALUE_FORMAT='JSON') AS SELECT ID, "
            "PREDICT('m', X1, X2) AS P, PREDICT('other', X1) AS Q FROM src;")  # fmt: skip
    sql = shadow_statement(live, "m", 4, "scores_shadow_v4", "scores_shadow_v4", "JSON")
    assert sql == ("CREATE STREAM scores_shadow_v4 WITH (KAFKA_TOPIC='scores_shadow_v4', VALUE_FORMAT='JSON') AS "
                   "SELECT ID, PREDICT('m:4', X1, X2) AS P, PREDICT('other', X1) AS Q FROM src;")  # fmt: skip
    assert "'m:4'" in shadow_statement(live.replace("'m'", "'m@production'"), "m", 4, "s", "t", "JSON")


def test_policy_round_trips_and_checks_its_trigger() -> None:
    policy = RetrainPolicy(model="m", monitor="m", trigger="drift", min_windows=2)
    assert RetrainPolicy.from_json(policy.to_json()) == policy
    assert policy.alert_rule == "drift_psi_max"
    with pytest.raises(InputError):
        RetrainPolicy(model="m", monitor="m", trigger="schedule")


# -- the loop on the broker -----------------------------------------------------------------------------------

W, LAG, WITHIN, STEP = 5_000, 2_000, 10_000, 20
N_A, N_B = 1_500, 1_500  # 30 s of event time each: 6 windows of 250 rows


def _records(first: int, count: int, base: int, seed: int) -> tuple[pa.Table, np.ndarray]:
    rng = np.random.default_rng(seed)
    x1, x2 = rng.standard_normal(count), rng.standard_normal(count)
    label = np.where(x1 + 0.3 * rng.standard_normal(count) > 0, "1", "0")
    ids = np.arange(first, first + count)
    return pa.table({"ID": ids, "X1": x1, "X2": x2, "CLASS": label}), base + (ids - 0) * STEP


def _read(settings: Settings, topic: str) -> list[dict[str, Any]]:
    with BatchConsumer(client_config(settings), [topic], track_end=True) as consumer:
        out: list[dict[str, Any]] = []
        deadline = time.monotonic() + 20
        while not consumer.reached_end() and time.monotonic() < deadline:
            out += [orjson.loads(v) for v in consumer.poll_batch(5000, 0.2).values if v]
        return out


def _versions(records: list[dict[str, Any]]) -> set[int]:
    return {int(r["P"]["VERSION"]) for r in records}


def _produce(settings: Settings, source: str, labels: str, table: pa.Table, ts: np.ndarray) -> None:
    config = client_config(settings)
    produce_table(config, source, table, timestamps=ts.tolist())
    produce_table(config, labels, table.select(["ID", "CLASS"]), timestamps=(ts + LAG).tolist())


@pytest.mark.parametrize("case", ["better", "no-better"])
def test_candidate_scored_in_shadow_then_promoted_only_when_better(
    kafka_settings: Settings, unique: Callable[[str], str], tmp_path: Path, case: str
) -> None:
    settings = kafka_settings.model_copy(
        update={"service_id": unique("svc"), "registry_url": str(tmp_path / "registry")}
    )
    session = Session(settings)
    src, labels, scores = unique("src"), unique("labels"), unique("scores")
    session.execute(
        f"CREATE STREAM src (ID BIGINT, X1 DOUBLE, X2 DOUBLE, CLASS VARCHAR) "
        f"WITH (KAFKA_TOPIC='{src}', VALUE_FORMAT='JSON', PARTITIONS=1);"
        f"CREATE STREAM labels (ID BIGINT, CLASS VARCHAR) WITH (KAFKA_TOPIC='{labels}', VALUE_FORMAT='JSON', "
        f"PARTITIONS=1);"
    )
    base = (int(time.time() * 1000) - 600_000) // W * W
    phase_a, ts_a = _records(0, N_A, base, seed=1)
    # version 1: the true relation ("no-better": the candidate can only match it) or the inverted one
    fit, _ = _records(0, 1_000, base, seed=2)
    if case == "better":
        fit = fit.set_column(3, "CLASS", pa.array(np.where(fit.column("CLASS").to_numpy(False) == "1", "0", "1")))
    fit = fit.select(["X1", "X2", "CLASS"])
    registry = Registry(settings.registry_root)
    lineage = Lineage(source="src", sql="SELECT X1, X2, CLASS FROM src")
    v1 = train_table("classifier", fit, "CLASS", {"model": "logistic"}, name="m", registry=registry, lineage=lineage)
    publish_events(settings, [registry.promote("m", v1.version)])
    session.execute(f"CREATE STREAM scores WITH (KAFKA_TOPIC='{scores}', VALUE_FORMAT='JSON') AS "
                    f"SELECT ID, PREDICT('m', X1, X2) AS P FROM src;")  # fmt: skip
    live = MonitorSpec(name="m-live", model="m", predictions="scores", labels="labels", key="ID", label="CLASS",
                       positive="1", start="earliest", window_ms=W, within_ms=WITHIN,
                       metrics_topic=unique("metrics"), alerts_topic=unique("alerts"))  # fmt: skip
    publish_monitor(settings, live)
    _produce(settings, src, labels, phase_a, ts_a)

    trigger: dict[str, Any] = {"trigger": "drift"} if case == "better" else {"trigger": "schedule", "every_s": 0.1}
    policy = RetrainPolicy(model="m", monitor="m-live", min_windows=3, min_labelled=600, margin=0.02,
                           cooldown_s=600, params={"model": "logistic"}, **trigger)  # fmt: skip
    stop = threading.Event()
    supervisor = MonitorSupervisor(settings, only=["m-live"], refresh_s=0.5)
    loop = RetrainingLoop(settings, policy, registry=registry)
    try:
        with running(session) as runner:
            scored_a = lambda: sum(m.records_out for m in runner.status() if "SCORES" in m.query_id.upper())  # noqa: E731
            assert wait_for(lambda: scored_a() >= N_A, 60)
            threading.Thread(target=supervisor.run, args=(stop,), daemon=True).start()
            if case == "better":
                assert loop.step() is None  # no alert yet
                alert = Alert("m", 1, base, base + W, "drift_psi_max", "drift_psi_max", 0.5, 0.2, AlertState.FIRING,
                              "FIRING m v1: drift_psi_max 0.5 above 0.2")  # fmt: skip
                with Producer(client_config(settings)) as producer:
                    producer.produce_batch(live.alerts_topic, [alert.to_json()], [b"m/1/drift_psi_max"])
            assert wait_for(lambda: loop.step() == "shadow", 60)
            shadow = loop.shadow
            assert shadow is not None and shadow.candidate.version == 2
            assert registry.aliases("m") == {"production": 1}  # registered, not promoted
            assert "m-live-shadow-v2" in read_monitors(settings)
            # the traffic the candidate is judged on comes after its training data, labels later
            phase_b, ts_b = _records(N_A, N_B, base, seed=3)
            _produce(settings, src, labels, phase_b, ts_b)
            end = int(ts_b[-1]) + WITHIN + 2 * W
            _produce(settings, src, labels, phase_b.slice(0, 1).set_column(0, "ID", pa.array([-1])), np.array([end]))
            decided: list[str | None] = [None]
            assert wait_for(lambda: (decided.__setitem__(0, loop.step()), decided[0] is not None)[1], 90), (
                shadow.comparison
            )
            shadow_topic = f"{scores}_shadow_v2"
            scored = _read(settings, shadow_topic)
            live_scored = _read(settings, scores)
    finally:
        loop.close()
        stop.set()

    assert len(scored) >= N_A + N_B and _versions(scored) == {2}  # the shadow scores with the candidate only
    assert len(live_scored) >= N_A + N_B and _versions(live_scored) == {1}  # the live output never does
    version, comparison = loop.decisions[0]
    assert version == 2 and comparison.windows >= 3 and comparison.labelled >= 600
    history = [(e.action, e.version) for e in registry.history("m") if e.action != "register"]
    control = latest_events(settings)
    if case == "better":
        assert decided[0] == "promote" and comparison.promote
        assert comparison.candidate is not None and comparison.current is not None
        assert comparison.candidate > comparison.current + 0.5  # inverted labels score close to 0
        assert registry.aliases("m") == {"production": 2}
        assert history == [("promote", 1), ("candidate", 2), ("shadow", 2), ("promote", 2)]
        assert control["m@production"].version == 2 and control["m@production"].reason == comparison.reason
    else:
        assert decided[0] == "reject" and not comparison.promote
        assert registry.aliases("m") == {"production": 1}
        assert history == [("promote", 1), ("candidate", 2), ("shadow", 2), ("reject", 2)]
        reject = control["m:2"]
        assert reject.action == "reject" and reject.reason and "less than the margin" in reject.reason
        assert reject.detail and reject.detail["metric"] == "f1"
    # the shadow is gone: query terminated, stream dropped, monitor removed
    session.refresh()
    assert session.engine.catalog.find("scores_shadow_v2") is None
    assert all(p.sink is None or p.sink.name.upper() != "SCORES_SHADOW_V2" for p in session.engine.queries.values())
    assert "m-live-shadow-v2" not in read_monitors(settings)
