"""A monitor on the real broker: labels 30 s late, drift injected at a known time, a restart in the middle.

The metrics topic must hold exactly one record per version and window, equal to an offline computation over
the same records (scikit-learn, to 1e-9), and the drift alert must fire at the first drifted window.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import orjson
import pyarrow as pa
import pytest
from sklearn.metrics import accuracy_score, average_precision_score, f1_score, roc_auc_score

from streamml.config import Settings
from streamml.kafka import BatchConsumer, client_config
from streamml.models.card import ModelCard, OutputSpec
from streamml.models.registry import Registry
from streamml.models.stats import reference_stats
from streamml.monitor.spec import MonitorSpec, plan_inputs
from streamml.monitor.worker import MonitorWorker
from streamml.runtime.session import Session, wait_for
from tests.runtime.conftest import produce_table

W, WITHIN, LAG, DRIFT_AT = 10_000, 40_000, 30_000, 60_000
N, STEP = 6_000, 20  # one prediction every 20 ms of event time: 120 s, 12 windows of 500


def _registry(tmp_path: Path, linear_onnx: bytes) -> Registry:
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2_000, 3))
    card = ModelCard(name="m", features=["A", "B", "C"], label="CLASS", output=OutputSpec.anomaly("variable"),
                     reference=reference_stats(x, ["A", "B", "C"], {"score": rng.random(2_000)}))  # fmt: skip
    registry = Registry(tmp_path / "registry")
    registry.register("m", linear_onnx, card)
    return registry


@pytest.fixture(scope="module")
def linear_onnx() -> bytes:
    from sklearn.linear_model import LinearRegression

    from streamml.models.export import export_sklearn

    x = np.random.default_rng(1).standard_normal((50, 3)).astype(np.float32)
    return export_sklearn(LinearRegression().fit(x, x.sum(axis=1)), x[:10]).onnx_bytes


def _data(base: int) -> tuple[pa.Table, pa.Table, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(5)
    ts = base + np.arange(N) * STEP
    truth = rng.random(N) < 0.3
    score = np.clip(0.35 * truth + 0.65 * rng.random(N), 0, 1)
    a = rng.standard_normal(N) + np.where(ts - base >= DRIFT_AT, 3.0, 0.0)  # drift of A from 60 s on
    p = pa.StructArray.from_arrays([pa.array(score), pa.array(score > 0.5), pa.array(["m"] * N), pa.array(np.ones(N, np.int32))],
                                   names=["SCORE", "IS_ANOMALY", "MODEL", "VERSION"])  # fmt: skip
    preds = pa.table({"ID": np.arange(N), "A": a, "B": rng.standard_normal(N), "C": rng.standard_normal(N), "P": p})
    has_label = rng.random(N) < 0.85
    labels = pa.table({"ID": np.arange(N)[has_label], "CLASS": np.where(truth, "1", "0")[has_label]})
    return preds, labels, ts, has_label


def _metrics(settings: Settings, topic: str) -> list[dict]:
    with BatchConsumer(client_config(settings), [topic], isolation="read_committed", track_end=True) as consumer:
        out: list[dict] = []
        deadline = time.monotonic() + 20
        while not consumer.reached_end() and time.monotonic() < deadline:
            out += [orjson.loads(v) for v in consumer.poll_batch(1000, 0.2).values if v]
        return out


def test_metrics_match_offline_exactly_once_across_a_restart(
    kafka_settings: Settings, unique: Callable[[str], str], tmp_path: Path, linear_onnx: bytes
) -> None:
    settings = kafka_settings.model_copy(update={"service_id": unique("svc")})
    session = Session(settings)
    preds_topic, labels_topic = unique("preds"), unique("labels")
    session.execute(
        f"CREATE STREAM preds (ID BIGINT, A DOUBLE, B DOUBLE, C DOUBLE, "
        f"P STRUCT<SCORE DOUBLE, IS_ANOMALY BOOLEAN, MODEL VARCHAR, VERSION INTEGER>) "
        f"WITH (KAFKA_TOPIC='{preds_topic}', VALUE_FORMAT='JSON', PARTITIONS=2);"
        f"CREATE STREAM labels (ID BIGINT, CLASS VARCHAR) WITH (KAFKA_TOPIC='{labels_topic}', VALUE_FORMAT='JSON', PARTITIONS=2);"
    )
    registry = _registry(tmp_path, linear_onnx)
    spec = MonitorSpec(name="m", model="m", predictions="preds", labels="labels", key="ID", label="CLASS",
                       positive="1", start="earliest", window_ms=W, within_ms=WITHIN, metrics_topic=unique("metrics"),
                       alerts_topic=unique("alerts"))  # fmt: skip
    assert plan_inputs(spec, session.engine, registry.get("m").card).features == ["A", "B", "C"]
    base = (int(time.time() * 1000) - 600_000) // W * W
    preds, labels, ts, has_label = _data(base)
    config = client_config(settings)
    half = N // 2
    # the first half of predictions and the labels that came for them 30 s later
    produce_table(config, preds_topic, preds.slice(0, half), timestamps=ts[:half].tolist())
    early = ts[has_label] + LAG < ts[half]
    produce_table(
        config, labels_topic, labels.filter(pa.array(early)), timestamps=(ts[has_label][early] + LAG).tolist()
    )

    first = MonitorWorker(spec, settings, session.engine, registry=registry)
    first.open()
    assert wait_for(lambda: (first.step(), first.stats.windows >= 1)[1], 60)  # labels reach 60 s: [0, 10 s) settles
    first.commit()
    first.step()  # processed, not committed: a crash now loses nothing and counts nothing twice
    first.close()

    produce_table(config, preds_topic, preds.slice(half), timestamps=ts[half:].tolist())
    produce_table(
        config, labels_topic, labels.filter(pa.array(~early)), timestamps=(ts[has_label][~early] + LAG).tolist()
    )
    # stream time moves only with records: one far ahead on each side settles every window of the data
    end = int(ts[-1]) + WITHIN + 2 * W
    produce_table(config, preds_topic, preds.slice(0, 1).set_column(0, "ID", pa.array([-1])), timestamps=[end])
    produce_table(config, labels_topic, labels.slice(0, 1).set_column(0, "ID", pa.array([-1])), timestamps=[end])
    second = MonitorWorker(spec, settings, session.engine, registry=registry)
    second.open()
    assert second.stats.restored_rows > 0
    try:
        # every window settles once the labels side is read to its end
        assert wait_for(lambda: (second.step(), second.join.settled_until > ts[-1])[1], 90)
        second.commit()
    finally:
        second.close()

    records = _metrics(settings, spec.metrics_topic)
    windows = [r["window_start_ms"] for r in records]
    assert sorted(windows) == list(range(base, base + N * STEP, W))  # one record per window, none twice
    label_ts = np.full(N, np.iinfo(np.int64).max)
    label_ts[has_label] = ts[has_label] + LAG
    truth = np.zeros(N, bool)
    truth[has_label] = labels.column("CLASS").to_numpy(zero_copy_only=False) == "1"
    score = preds.column("P").combine_chunks().field("SCORE").to_numpy()
    for record in records:
        rows = (ts >= record["window_start_ms"]) & (ts < record["window_end_ms"])
        known = rows & has_label & (label_ts - ts <= WITHIN)
        y, s = truth[known].astype(int), score[known]
        assert (record["count"], record["labelled"]) == (rows.sum(), known.sum())
        assert record["accuracy"] == pytest.approx(accuracy_score(y, s > 0.5), abs=1e-9)
        assert record["f1"] == pytest.approx(f1_score(y, s > 0.5), abs=1e-9)
        assert record["roc_auc"] == pytest.approx(roc_auc_score(y, s), abs=1e-9)
        assert record["pr_auc"] == pytest.approx(average_precision_score(y, s), abs=1e-9)
        drifted = record["window_start_ms"] - base >= DRIFT_AT
        assert record["drift"]["features"]["A"]["drifted"] is drifted
        assert (record["drift_psi_max"] > 0.2) is drifted
        assert record["drift"]["score"]["kind"] == "numeric"  # the score against the training scores

    alerts = _metrics(settings, spec.alerts_topic)
    firing = [a for a in alerts if a["state"] == "FIRING" and a["metric"] == "drift_psi_max"]
    assert [a["window_start_ms"] - base for a in firing] == [DRIFT_AT]  # at the first drifted window, once
