"""Broker-free: predictions join late labels by window; the window metrics equal scikit-learn's."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest
from sklearn.metrics import (
    accuracy_score,
    average_precision_score,
    f1_score,
    precision_score,
    recall_score,
    roc_auc_score,
)

from streamml.errors import InputError
from streamml.monitor.labeljoin import LabelJoin
from streamml.monitor.report import window_metrics
from streamml.monitor.spec import MonitorSpec, parse_duration

W, WITHIN = 10_000, 60_000


def predictions(
    ts: np.ndarray, keys: np.ndarray | None = None, version: int = 1, score: np.ndarray | None = None
) -> pa.Table:
    keys = ts if keys is None else keys
    score = np.full(len(ts), 0.5) if score is None else score
    return pa.table(
        {
            "KEY": pa.array(keys),
            "VERSION": pa.array(np.full(len(ts), version), pa.int32()),
            "PREDICTION": pa.array(score > 0.5),
            "SCORE": pa.array(score),
            "TS": pa.array(ts),
        }
    )


def labels(keys: np.ndarray, ts: np.ndarray, values: list[str] | np.ndarray) -> pa.Table:
    return pa.table({"KEY": pa.array(keys), "LABEL": pa.array(list(values), pa.string()), "TS": pa.array(ts)})


def test_windows_settle_once_no_label_can_come_and_unlabelled_rows_count() -> None:
    join = LabelJoin(W, WITHIN)
    ts = np.arange(0, 100_000, 1000)
    join.add_predictions(predictions(ts))
    assert [w.start_ms for w in join.complete()] == list(range(0, 90_000, W))  # the window at 90 s is still open
    assert join.complete() == []  # each window is complete once
    half = ts[::2]
    join.add_labels(labels(half, half + 30_000, ["1"] * len(half)))
    settled = join.settle()
    # labels reach 129 s: windows ending by 129 - 60 = 69 s can get no more labels
    assert [w.end_ms for w in settled] == [10_000, 20_000, 30_000, 40_000, 50_000, 60_000]
    assert all(w.rows.column("LABEL").null_count == 5 for w in settled)
    assert join.settle() == []
    assert join.predictions is not None and join.predictions.num_rows == 40


def test_a_label_matches_within_reach_only_and_the_latest_wins() -> None:
    join = LabelJoin(W, WITHIN)
    join.add_predictions(predictions(np.array([1000, 2000, 3000]), keys=np.array([1, 2, 3])))
    join.add_labels(labels(np.array([1, 1, 2, 3]), np.array([5000, 9000, 1000 + WITHIN + 1500, 3000 + WITHIN]),
                           ["0", "1", "1", "1"]))  # fmt: skip
    join.add_predictions(predictions(np.array([500_000]), keys=np.array([9])))
    (window,) = join.settle(labels_idle=True)
    assert dict(zip(window.rows.column("KEY").to_pylist(), window.rows.column("LABEL").to_pylist(), strict=True)) == {
        1: "1", 2: None, 3: "1"}  # fmt: skip


def test_late_rows_are_counted_and_dropped() -> None:
    join = LabelJoin(W, 0)
    join.add_predictions(predictions(np.array([1000, 25_000])))
    join.add_labels(labels(np.array([25_000]), np.array([25_000]), ["1"]))
    assert [w.end_ms for w in join.settle()] == [10_000]
    join.add_predictions(predictions(np.array([2000])))  # its window settled already
    join.add_labels(labels(np.array([1000]), np.array([1000]), ["1"]))  # nothing it could match is left
    assert (join.late_predictions, join.late_labels) == (1, 1)


def test_restore_from_marks_and_changes_gives_the_same_windows() -> None:
    rng = np.random.default_rng(3)
    ts = np.sort(rng.integers(0, 120_000, 400))
    keys = np.arange(len(ts))
    live, replica_changes = LabelJoin(W, WITHIN), []
    live.add_predictions(predictions(ts, keys, score=rng.random(len(ts))))
    live.add_labels(labels(keys[:200], ts[:200] + 20_000, rng.choice(["0", "1"], 200)))
    first = live.settle()
    replica_changes.append(live.take_changes())
    live.add_labels(labels(keys[200:], ts[200:] + 20_000, rng.choice(["0", "1"], 200)))
    replica_changes.append(live.take_changes())
    replica = LabelJoin(W, WITHIN)
    replica.restore(live.marks(), [p for p, _ in replica_changes if p is not None],
                    [lab for _, lab in replica_changes if lab is not None])  # fmt: skip
    assert replica.rows == live.rows and first
    ours, theirs = live.settle(labels_idle=True), replica.settle(labels_idle=True)
    assert [w.start_ms for w in ours] == [w.start_ms for w in theirs]
    assert all(a.rows.equals(b.rows) for a, b in zip(ours, theirs, strict=True))


def test_window_metrics_match_scikit_learn() -> None:
    rng = np.random.default_rng(11)
    n = 500
    ts = rng.integers(0, W, n)
    truth = rng.random(n) < 0.3
    score = np.clip(truth * 0.3 + rng.random(n) * 0.7, 0, 1)
    join = LabelJoin(W, WITHIN)
    join.add_predictions(predictions(ts, np.arange(n), score=score))
    labelled = rng.random(n) < 0.8
    keys = np.arange(n)[labelled]
    join.add_labels(labels(keys, ts[labelled] + 30_000, np.where(truth[labelled], "1", "0")))
    join.add_predictions(predictions(np.array([10 * WITHIN]), np.array([n + 1])))
    (window,) = join.settle(labels_idle=True)[:1]
    spec = MonitorSpec(name="m", model="m", predictions="p", labels="l", key="k", label="y", positive="1")
    (record,) = window_metrics(spec, window, {}, lambda v: None)
    y, s = truth[labelled].astype(int), score[labelled]
    guess = (s > 0.5).astype(int)
    assert (record["count"], record["labelled"], record["unlabelled"]) == (n, labelled.sum(), n - labelled.sum())
    for name, expected in [("accuracy", accuracy_score(y, guess)), ("precision", precision_score(y, guess)),
                           ("recall", recall_score(y, guess)), ("f1", f1_score(y, guess)),
                           ("roc_auc", roc_auc_score(y, s)), ("pr_auc", average_precision_score(y, s))]:  # fmt: skip
        assert record[name] == pytest.approx(expected, abs=1e-9), name
    assert record["version"] == 1 and record["window_start_ms"] == 0 and record["window_end_ms"] == W


def test_durations_and_definitions_are_checked() -> None:
    assert parse_duration("30 SECONDS") == 30_000 and parse_duration("1 hour") == 3_600_000
    with pytest.raises(InputError, match="not a duration"):
        parse_duration("soon")
    with pytest.raises(InputError, match="not valid"):
        MonitorSpec(name="bad name", model="m", predictions="p", labels="l", key="k", label="y")
    with pytest.raises(InputError):
        LabelJoin(0, 1)


def test_a_window_waits_for_the_slowest_partition() -> None:
    """A label read far ahead on one partition must not settle windows another partition still has labels for."""
    join = LabelJoin(W, WITHIN)
    join.add_predictions(predictions(np.array([1000, 500_000]), keys=np.array([1, 2])))
    join.add_labels(labels(np.array([2]), np.array([500_000]), ["1"]))  # partition A: far ahead
    assert join.settle(predictions_mark=500_000, labels_mark=1000) == []  # partition B is still at 1 s
    join.add_labels(labels(np.array([1]), np.array([31_000]), ["1"]))  # partition B's label arrives
    (window,) = join.settle(predictions_mark=500_000, labels_mark=500_000)[:1]
    assert window.rows.column("LABEL").to_pylist() == ["1"]
