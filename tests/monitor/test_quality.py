"""Window quality against scikit-learn's offline metrics, to 1e-9, on random data with tied scores."""

from __future__ import annotations

import math

import numpy as np
import orjson
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.calibration import calibration_curve
from sklearn.metrics import accuracy_score, average_precision_score, precision_recall_fscore_support, roc_auc_score

from streamml.errors import InputError
from streamml.monitor.quality import average_precision, roc_auc, window_quality

TOL = 1e-9


def close(ours: float | None, theirs: float) -> bool:
    """None stands for sklearn's NaN (an undefined ratio)."""
    if ours is None:
        return math.isnan(theirs)
    return abs(ours - theirs) <= TOL


@settings(max_examples=60, deadline=None)
@given(
    seed=st.integers(0, 2**32 - 1),
    n=st.integers(2, 300),
    levels=st.sampled_from([3, 11, 101, 0]),
    as_strings=st.booleans(),
)
def test_binary_matches_sklearn(seed: int, n: int, levels: int, as_strings: bool) -> None:
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    p = np.where(rng.random(n) < 0.7, y, 1 - y)
    scores = rng.random(n)
    if levels:  # few distinct scores: many ties
        scores = np.round(scores * (levels - 1)) / (levels - 1)
    labels = y.astype(str) if as_strings else y
    q = window_quality(labels, p, scores=scores)
    assert (q.count, q.labelled, q.evaluated, q.positive, q.average) == (n, n, n, "1", "binary")
    assert close(q.accuracy, accuracy_score(y, p))
    prec, rec, f1, _ = precision_recall_fscore_support(y, p, average="binary", zero_division=np.nan)
    assert close(q.precision, prec) and close(q.recall, rec) and close(q.f1, f1)
    if 0 < y.sum() < n:
        assert close(q.roc_auc, roc_auc_score(y, scores))
        assert close(q.pr_auc, average_precision_score(y, scores))
        prob_true, prob_pred = calibration_curve(y, scores, n_bins=10, strategy="uniform")
        filled = [b for b in q.calibration if b.count]
        assert len(filled) == len(prob_true)
        assert all(close(b.observed_rate, t) for b, t in zip(filled, prob_true, strict=True))
        assert all(close(b.mean_score, m) for b, m in zip(filled, prob_pred, strict=True))
        counts = np.array([b.count for b in filled])
        assert close(q.ece, float(np.sum(counts * np.abs(prob_pred - prob_true)) / n))
    else:
        assert q.roc_auc is None and q.pr_auc is None
    assert q.mean_score is not None and abs(q.mean_score - scores.mean()) <= TOL


@pytest.mark.parametrize("seed", range(8))
def test_multiclass_macro_and_one_class_positive_match_sklearn(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n = int(rng.integers(5, 400))
    names = np.array(["cat", "dog", "eel", "fox"])
    y = names[rng.integers(0, 3, n)]  # "fox" is only ever predicted: its recall is undefined
    p = np.where(rng.random(n) < 0.6, y, names[rng.integers(0, 4, n)])
    q = window_quality(y, p)
    assert q.average == "macro" and q.positive is None
    assert q.classes == tuple(sorted(set(y) | set(p)))
    assert close(q.accuracy, accuracy_score(y, p))
    prec, rec, f1, _ = precision_recall_fscore_support(y, p, average="macro", zero_division=np.nan)
    assert close(q.precision, prec) and close(q.recall, rec) and close(q.f1, f1)
    one = window_quality(y, p, positive="dog")
    prec, rec, f1, _ = precision_recall_fscore_support(y, p, labels=["dog"], average=None, zero_division=np.nan)
    assert one.average == "binary" and close(one.precision, prec[0]) and close(one.recall, rec[0])
    assert close(one.f1, f1[0]) and close(one.accuracy, accuracy_score(y, p))


@settings(max_examples=80, deadline=None)
@given(st.lists(st.tuples(st.booleans(), st.integers(0, 4)), min_size=0, max_size=40))
def test_rank_auc_and_average_precision_match_sklearn_with_ties(rows: list[tuple[bool, int]]) -> None:
    y = np.array([r[0] for r in rows], dtype=bool)
    s = np.array([r[1] for r in rows], dtype=np.float64) / 4
    if 0 < y.sum() < y.size:
        assert close(roc_auc(y, s), roc_auc_score(y, s))
        assert close(average_precision(y, s), average_precision_score(y, s))
    else:
        assert roc_auc(y, s) is None and average_precision(y, s) is None


def test_unlabelled_rows_are_counted_and_left_out() -> None:
    labels = np.array([1.0, np.nan, 0.0, 1.0, np.nan, 0.0])
    predicted = np.array([1, 1, 1, 0, 0, 0])
    scores = np.array([0.9, 0.8, 0.7, 0.2, 0.1, 0.3])
    q = window_quality(labels, predicted, scores=scores, threshold=0.5)
    assert (q.count, q.labelled, q.unlabelled, q.evaluated) == (6, 4, 2, 4)
    keep = ~np.isnan(labels)
    assert close(q.accuracy, accuracy_score(labels[keep], predicted[keep]))
    assert close(q.roc_auc, roc_auc_score(labels[keep], scores[keep]))
    assert q.threshold == 0.5
    assert q.mean_score is not None and abs(q.mean_score - scores.mean()) <= TOL  # every score, labelled or not
    with_none = window_quality(["1", None, "0", "1"], ["1", "1", None, "0"])
    assert (with_none.labelled, with_none.evaluated, with_none.accuracy) == (3, 2, 0.5)


def test_boolean_anomaly_flags_score_against_the_fraud_class() -> None:
    labels = np.array(["1", "0", "0", "1", "0", "0", "1", "0"])
    is_anomaly = np.array([True, False, True, True, False, False, False, False])
    error = np.array([3.0, 0.1, 2.5, 4.0, 0.2, 0.2, 0.9, 0.3])  # reconstruction error, not a probability
    q = window_quality(labels, is_anomaly, scores=error, positive="1", threshold=1.0)
    y, p = labels == "1", is_anomaly
    assert q.average == "binary" and q.positive == "1"
    assert close(q.accuracy, accuracy_score(y, p))
    prec, rec, f1, _ = precision_recall_fscore_support(y, p, average="binary")
    assert close(q.precision, prec) and close(q.recall, rec) and close(q.f1, f1)
    assert close(q.roc_auc, roc_auc_score(y, error)) and close(q.pr_auc, average_precision_score(y, error))
    assert q.ece is None and q.calibration == ()  # scores outside [0, 1] are no probabilities
    # numeric labels and a numeric positive name the same class; the default positive of 0/1 labels is "1"
    assert window_quality(y.astype(int), p, positive=1).f1 == q.f1
    assert window_quality(y.astype(float), list(p)).f1 == q.f1
    with pytest.raises(InputError, match="positive"):
        window_quality(["a", "a"], [True, False])


def test_string_classes_default_to_the_larger_as_positive() -> None:
    y = ["<=50K", ">50K", ">50K", "<=50K", ">50K"]
    p = ["<=50K", ">50K", "<=50K", "<=50K", ">50K"]
    q = window_quality(y, p, scores=[0.1, 0.8, 0.4, 0.3, 0.9])
    assert q.positive == ">50K" and q.classes == ("<=50K", ">50K")
    assert close(q.recall, 2 / 3) and close(q.precision, 1.0)
    assert window_quality([9, 10], [9, 9]).positive == "10"  # numbers sort by value, as sklearn's classes_


def test_calibration_bins_by_hand() -> None:
    scores = np.array([0.0, 0.05, 0.1, 0.55, 0.6, 1.0])
    labels = np.array([0, 0, 1, 1, 0, 1])
    q = window_quality(labels, (scores >= 0.5).astype(int), scores=scores, bins=2)
    low, high = q.calibration
    assert (low.lower, low.upper, low.count, high.count) == (0.0, 0.5, 3, 3)  # bins (0, 0.5], (0.5, 1] and 0
    assert close(low.mean_score, 0.05) and close(low.observed_rate, 1 / 3)
    assert close(high.mean_score, 2.15 / 3) and close(high.observed_rate, 2 / 3)
    expected = (3 * abs(0.05 - 1 / 3) + 3 * abs(2.15 / 3 - 2 / 3)) / 6
    assert close(q.ece, expected)


def test_empty_and_unlabelled_windows_give_none() -> None:
    empty = window_quality([], [], scores=[])
    assert (empty.count, empty.labelled, empty.accuracy, empty.roc_auc, empty.ece, empty.mean_score) == (
        0,
        0,
        None,
        None,
        None,
        None,
    )
    none = window_quality([None, None, float("nan")], ["1", "0", "1"], scores=[0.2, 0.4, 0.6])
    assert (none.labelled, none.unlabelled, none.accuracy, none.precision, none.roc_auc, none.ece) == (
        0,
        3,
        None,
        None,
        None,
        None,
    )
    one_class = window_quality(["1", "1"], ["1", "0"], scores=[0.9, 0.1])
    assert one_class.roc_auc is None and one_class.pr_auc is None and one_class.accuracy == 0.5
    assert one_class.precision == 1.0 and one_class.recall == 0.5
    nothing_predicted = window_quality(["0", "1"], ["0", "0"])
    assert nothing_predicted.precision is None and nothing_predicted.recall == 0.0 and nothing_predicted.f1 == 0.0
    for q in (empty, none, one_class, nothing_predicted):
        orjson.dumps(q.to_dict())  # JSON-ready: no NaN, no NumPy scalars
        assert not any(isinstance(v, float) and math.isnan(v) for v in q.to_dict().values())


def test_inputs_must_line_up() -> None:
    with pytest.raises(InputError, match="length"):
        window_quality(["1", "0"], ["1"])
    with pytest.raises(InputError, match="scores"):
        window_quality(["1", "0"], ["1", "0"], scores=[0.5])
    with pytest.raises(InputError, match="bins"):
        window_quality(["1"], ["1"], bins=0)


def test_arrow_and_object_columns_score_like_numpy() -> None:
    rng = np.random.default_rng(9)
    y = rng.integers(0, 2, 500)
    p = np.where(rng.random(500) < 0.8, y, 1 - y)
    expected = window_quality(y, p)
    chunked = pa.chunked_array([pa.array(y[:200].astype(str)), pa.array(y[200:].astype(str))])
    assert window_quality(chunked, pa.array(p.astype(float))) == expected
    assert window_quality(y.astype(object), list(p)) == expected
    with_nulls = window_quality(pa.array(["1", None, "0"]), pa.array([1, 1, None]))
    assert (with_nulls.labelled, with_nulls.evaluated, with_nulls.accuracy) == (2, 1, 1.0)
    mixed = window_quality(np.array(["a", 1, 1.0, None], dtype=object), np.array(["a", "1", 2, "b"], dtype=object))
    assert (mixed.evaluated, mixed.accuracy, mixed.classes, mixed.average) == (3, 2 / 3, ("1", "2", "a"), "macro")
    with pytest.raises(InputError, match="scalar"):
        window_quality("1", "1")


def test_booleans_alone_are_the_binary_problem_of_true() -> None:
    q = window_quality([True, False, True, False], [True, True, True, False], scores=[0.9, 0.6, 0.7, 0.2])
    assert (q.positive, q.classes, q.average) == ("true", ("false", "true"), "binary")
    assert close(q.precision, 2 / 3) and q.recall == 1.0 and q.roc_auc == 1.0
    assert window_quality(["true", "false"], [True, True]).accuracy == 0.5  # "true" is the key of True
    one_vs_rest = window_quality(["yes", "no", "yes"], [True, False, False], positive="yes")
    assert (one_vs_rest.accuracy, one_vs_rest.recall, one_vs_rest.classes) == (2 / 3, 0.5, ("yes", "not yes"))
