"""The monitor's label join and window metrics, side by side with the per-record way of doing it.

Both take the same predictions and late labels (``--rows`` of each, ``--windows`` tumbling windows, 85 % of
the predictions labelled, labels 30 s late) and give, per window, the labelled count, precision and recall:

- streamml: :class:`~streamml.monitor.labeljoin.LabelJoin` (Arrow, one DuckDB join per settle) and
  :func:`~streamml.monitor.report.window_metrics` (NumPy), exactly what a monitor worker runs;
- per record: a dict of pending predictions by key, each label looked up and matched one at a time, each
  window's rows collected in lists and scored with scikit-learn (precision, recall, F1, ROC AUC, PR AUC), as a
  hand-written consumer of both topics would.

The two must agree on every count; rows/s is the median over ``--rounds`` alternating rounds.

    .venv/bin/python -m benchmarks.monitor_join --rows 200000 --rounds 3
"""

from __future__ import annotations

import argparse
import time
from collections import defaultdict

import numpy as np
import pyarrow as pa

from benchmarks.report import median, table, write_section
from streamml.monitor.labeljoin import LabelJoin
from streamml.monitor.report import window_metrics
from streamml.monitor.spec import MonitorSpec

WITHIN, LAG = 60_000, 30_000


def make_data(rows: int, windows: int, seed: int = 0) -> tuple[pa.Table, pa.Table, int]:
    rng = np.random.default_rng(seed)
    window_ms = 10_000
    ts = np.sort(rng.integers(0, windows * window_ms, rows))
    truth = rng.random(rows) < 0.1
    score = np.clip(truth * 0.4 + rng.random(rows) * 0.6, 0, 1)
    preds = pa.table({"KEY": pa.array(np.arange(rows)), "VERSION": pa.array(np.ones(rows, np.int32)),
                      "PREDICTION": pa.array(score > 0.5), "SCORE": pa.array(score), "TS": pa.array(ts)})  # fmt: skip
    keep = rng.random(rows) < 0.85
    labels = pa.table({"KEY": preds.column("KEY").filter(pa.array(keep)),
                       "LABEL": pa.array(np.where(truth[keep], "1", "0")), "TS": pa.array(ts[keep] + LAG)})  # fmt: skip
    return preds, labels, window_ms


def vectorised(preds: pa.Table, labels: pa.Table, window_ms: int) -> dict[int, tuple[int, float, float]]:
    join = LabelJoin(window_ms, WITHIN)
    spec = MonitorSpec(name="b", model="b", predictions="p", labels="l", key="k", label="y", positive="1",
                       window_ms=window_ms, within_ms=WITHIN)  # fmt: skip
    out = {}
    step = 20_000  # as batches arrive
    for start in range(0, preds.num_rows, step):
        join.add_predictions(preds.slice(start, step))
        first, last = (labels.num_rows * i // preds.num_rows for i in (start, min(start + step, preds.num_rows)))
        join.add_labels(labels.slice(first, last - first))
        for window in join.settle():
            (record,) = window_metrics(spec, window, {}, lambda v: None)
            out[window.start_ms] = (record["labelled"], record["precision"], record["recall"])
    join.add_predictions(preds.slice(0, 1).set_column(4, "TS", pa.array([10**12])))
    for window in join.settle(labels_idle=True):
        if window.start_ms < 10**12 - window_ms:
            (record,) = window_metrics(spec, window, {}, lambda v: None)
            out[window.start_ms] = (record["labelled"], record["precision"], record["recall"])
    return out


def per_record(preds: pa.Table, labels: pa.Table, window_ms: int) -> dict[int, tuple[int, float, float]]:
    from sklearn.metrics import average_precision_score, f1_score, precision_score, recall_score, roc_auc_score

    pending = {}
    for key, guess, score, ts in zip(preds.column("KEY").to_pylist(), preds.column("PREDICTION").to_pylist(),
                                     preds.column("SCORE").to_pylist(), preds.column("TS").to_pylist(), strict=True):  # fmt: skip
        pending[key] = (guess, score, ts)
    rows: dict[int, list[tuple[bool, bool, float]]] = defaultdict(list)  # per window: truth, guess, score
    for key, label, ts in zip(labels.column("KEY").to_pylist(), labels.column("LABEL").to_pylist(),
                              labels.column("TS").to_pylist(), strict=True):  # fmt: skip
        found = pending.get(key)
        if found is not None and abs(ts - found[2]) <= WITHIN:
            rows[found[2] // window_ms * window_ms].append((label == "1", found[0], found[1]))
    out = {}
    for window, seen in rows.items():
        truth, guess, score = (list(c) for c in zip(*seen, strict=True))
        f1_score(truth, guess, zero_division=np.nan)
        roc_auc_score(truth, score)
        average_precision_score(truth, score)
        out[window] = (len(seen), float(precision_score(truth, guess, zero_division=np.nan)),
                       float(recall_score(truth, guess, zero_division=np.nan)))  # fmt: skip
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=200_000)
    parser.add_argument("--windows", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--write", action="store_true", help="update docs/benchmarks.md")
    args = parser.parse_args()
    preds, labels, window_ms = make_data(args.rows, args.windows)
    times: dict[str, list[float]] = {
        "streamml LabelJoin + window_metrics": [],
        "per-record dict join + scikit-learn": [],
    }
    results = {}
    for _ in range(args.rounds):
        for name, run in (
            ("streamml LabelJoin + window_metrics", vectorised),
            ("per-record dict join + scikit-learn", per_record),
        ):
            started = time.perf_counter()
            results[name] = run(preds, labels, window_ms)
            times[name].append(time.perf_counter() - started)
    ours, theirs = results.values()
    assert set(ours) == set(theirs) and all(
        ours[w][0] == theirs[w][0] and np.allclose([x or 0 for x in ours[w][1:]], [x or 0 for x in theirs[w][1:]])
        for w in ours
    ), "the two joins disagree"
    rates = {name: args.rows / median(t) for name, t in times.items()}
    reference = rates["per-record dict join + scikit-learn"]
    rows = [[name, args.rows, rate, f"{rate / reference:.1f}x"] for name, rate in rates.items()]
    body = table(["join", "predictions", "predictions/s", "vs per record"], rows)
    print(body)
    if args.write:
        write_section("monitor-join", "Monitor: joining predictions with late labels, per window", body,
                      f"python -m benchmarks.monitor_join --rows {args.rows} --rounds {args.rounds} --write")  # fmt: skip


if __name__ == "__main__":
    main()
