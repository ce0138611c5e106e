"""Realised model quality in one time window, once labels have arrived: the numbers a monitor publishes.

:func:`window_quality` takes the labels and predictions (and optionally the scores) of one model version
in one window and returns a :class:`Quality`. Columns are hash-encoded with Arrow into integer codes, then
everything is computed with NumPy over whole arrays, and is exact: accuracy, precision, recall and F1
match ``sklearn.metrics`` (``zero_division=nan``), ROC AUC is the Mann-Whitney statistic with tied
scores counted half, PR AUC is average precision as scikit-learn defines it (a step-wise sum, no
interpolation). A metric that is undefined for the window (no labels, one class only, no predicted
positives) is ``None``, never NaN and never an exception.

Values are compared as category keys (:func:`streamml.models.stats.category_keys`), so ``1``, ``1.0`` and
``"1"`` are one class, and ``True`` / ``False`` are the classes ``"true"`` / ``"false"``. Booleans mean
"is the positive class" as soon as they meet other classes: when the window holds booleans (the anomaly
model's ``is_anomaly``) and either other classes (the fraud label ``"1"`` / ``"0"``) or a ``positive``,
it is scored one-vs-rest: a row is positive when its value is ``True`` or equals ``positive``, negative
otherwise (``False`` or any other class). A window of booleans alone is the binary problem of ``"true"``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Literal

import numpy as np
import pyarrow as pa
from numpy.typing import ArrayLike

from streamml.errors import InputError
from streamml.models.stats import Column, category_codes, category_keys

#: the category keys of booleans
_BOOLEAN_KEYS = ("false", "true")

__all__ = ["CalibrationBin", "Quality", "average_precision", "roc_auc", "window_quality"]


@dataclass(frozen=True)
class CalibrationBin:
    """One bin of a reliability plot: scores in ``(lower, upper]`` (the first bin also holds 0)."""

    lower: float
    upper: float
    count: int
    #: mean score of the labelled rows in the bin; None for an empty bin
    mean_score: float | None
    #: fraction of those rows whose label is the positive class; None for an empty bin
    observed_rate: float | None


@dataclass(frozen=True)
class Quality:
    """Quality of one model version in one window; a ratio that is undefined there is None."""

    #: rows given
    count: int
    #: rows with a label (not None / NaN)
    labelled: int
    #: rows without a label
    unlabelled: int
    #: rows with both a label and a prediction: the rows the label metrics are computed on
    evaluated: int
    accuracy: float | None
    #: ``"binary"``: precision/recall/F1 of ``positive``; ``"macro"``: unweighted mean over the classes seen
    average: Literal["binary", "macro"] | None
    positive: str | None
    precision: float | None
    recall: float | None
    f1: float | None
    #: classes seen among the evaluated rows (labels and predictions), in sorted order
    classes: tuple[str, ...]
    roc_auc: float | None
    pr_auc: float | None
    #: expected calibration error: sum over bins of (bin rows / rows) * |mean score - observed rate|
    ece: float | None
    calibration: tuple[CalibrationBin, ...]
    #: mean of every finite score given, labelled or not
    mean_score: float | None
    threshold: float | None

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready view (the calibration bins as a list of objects)."""
        data = asdict(self)
        data["classes"] = list(self.classes)
        data["calibration"] = [asdict(b) for b in self.calibration]
        return data


def window_quality(
    labels: Column,
    predicted: Column,
    *,
    scores: ArrayLike | None = None,
    positive: object = None,
    threshold: float | None = None,
    bins: int = 10,
) -> Quality:
    """Quality of one window: ``labels``, ``predicted`` and ``scores`` are aligned, one entry per row.

    Columns are NumPy arrays (or lists) or Arrow arrays; None and NaN are nulls. Label metrics use the rows
    with both a label and a prediction. ``positive`` names the positive class (any value, compared as a
    category key). Without it a window is binary when at most two classes are seen; the positive class is
    then ``"1"`` if the classes are among ``0``/``1``, ``"true"`` for booleans, else the larger of two
    classes in sorted order (numbers by value), as scikit-learn takes ``classes_[1]`` (``">50K"`` over
    ``"<=50K"``). More than two classes without ``positive`` give macro averages.

    ``scores`` is the positive class's probability or anomaly score (NaN for none): ROC AUC and PR AUC
    need both classes among the labelled rows with a score, calibration needs every score in [0, 1] and
    uses ``bins`` equal-width bins. ``threshold`` is only echoed.
    """
    if bins < 1:
        raise InputError(f"bins must be at least 1, got {bins}")
    truth_all, guess_all, names = _joint_codes(labels, predicted)
    count = truth_all.size
    score_array = _scores(scores, count)
    labelled = truth_all >= 0
    evaluated = labelled & (guess_all >= 0)
    n_eval = int(evaluated.sum())
    truth_codes, guess_codes = truth_all[evaluated], guess_all[evaluated]
    used = np.bincount(np.concatenate([truth_codes, guess_codes]), minlength=names.size) > 0
    flags = np.isin(names, _BOOLEAN_KEYS)
    seen = [str(n) for n in names[used & ~flags]]  # classes other than booleans
    one_vs_rest = bool(np.any(used & flags)) and (bool(seen) or positive is not None)
    positive_key = _positive(positive, seen if one_vs_rest else [str(n) for n in names[used]])
    if one_vs_rest and positive_key is None:
        raise InputError(
            "boolean labels or predictions need the positive class",
            hint=f"pass positive=...; classes seen: {', '.join(seen[:5])}",
        )
    if positive_key is None:
        positive_of = np.zeros(names.size + 1, dtype=bool)
    else:  # per code (and -1, a null, last): is it the positive class; "true" stands for it in one-vs-rest
        positive_of = np.r_[(names == positive_key) | ((names == "true") & one_vs_rest), False]
    positive_true = positive_of[truth_all]
    accuracy = precision = recall = f1 = None
    average: Literal["binary", "macro"] | None = None
    classes: tuple[str, ...] = ()
    if n_eval and one_vs_rest:
        truth, guess = positive_of[truth_codes], positive_of[guess_codes]
        accuracy = float(np.mean(truth == guess))
        classes = (str(positive_key), f"not {positive_key}")
        average = "binary"
        precision, recall, f1 = _binary_prf(truth, guess)
    elif n_eval:
        accuracy = float(np.mean(truth_codes == guess_codes))
        classes = tuple(_sorted_classes([str(n) for n in names[used]]))
        if positive_key is not None:
            average = "binary"
            precision, recall, f1 = _binary_prf(positive_of[truth_codes], positive_of[guess_codes])
        elif len(classes) > 2:
            average = "macro"
            precision, recall, f1 = _macro_prf(truth_codes, guess_codes, names.size)
    roc = pr = ece = None
    calibration: tuple[CalibrationBin, ...] = ()
    mean_score = None
    if score_array is not None:
        finite = np.isfinite(score_array)
        mean_score = float(score_array[finite].mean()) if finite.any() else None
        if positive_key is not None:
            rows = labelled & finite
            y, s = positive_true[rows], score_array[rows]
            roc, pr = roc_auc(y, s), average_precision(y, s)
            if s.size and bool(np.all((score_array[finite] >= 0.0) & (score_array[finite] <= 1.0))):
                ece, calibration = _calibration(y, s, bins)
    return Quality(
        count=count,
        labelled=int(labelled.sum()),
        unlabelled=int(count - labelled.sum()),
        evaluated=n_eval,
        accuracy=accuracy,
        average=average,
        positive=positive_key,
        precision=precision,
        recall=recall,
        f1=f1,
        classes=classes,
        roc_auc=roc,
        pr_auc=pr,
        ece=ece,
        calibration=calibration,
        mean_score=mean_score,
        threshold=None if threshold is None else float(threshold),
    )


def roc_auc(positive: np.ndarray, scores: np.ndarray) -> float | None:
    """Area under the ROC curve: the chance a positive outscores a negative, ties counting half.

    Computed from average ranks (the Mann-Whitney U statistic); None unless both classes are present.
    """
    y = np.asarray(positive, dtype=bool)
    n_pos = int(y.sum())
    n_neg = y.size - n_pos
    if n_pos == 0 or n_neg == 0:
        return None
    _, inverse, counts = np.unique(np.asarray(scores, dtype=np.float64), return_inverse=True, return_counts=True)
    ends = np.cumsum(counts, dtype=np.float64)
    ranks = (ends - (counts - 1) / 2.0)[inverse]  # average 1-based rank of each tie group
    u = float(ranks[y].sum()) - n_pos * (n_pos + 1) / 2.0
    return u / (n_pos * n_neg)


def average_precision(positive: np.ndarray, scores: np.ndarray) -> float | None:
    """Average precision as scikit-learn defines it: sum over score thresholds of (R_n - R_{n-1}) * P_n.

    Thresholds are the distinct scores, highest first, so tied scores enter together; no interpolation.
    None unless both classes are present.
    """
    y = np.asarray(positive, dtype=bool)
    n_pos = int(y.sum())
    if n_pos in {0, y.size}:
        return None
    s = np.asarray(scores, dtype=np.float64)
    order = np.argsort(-s, kind="stable")
    s, y = s[order], y[order]
    last = np.r_[np.flatnonzero(np.diff(s)), s.size - 1]  # last row of each group of equal scores
    tps = np.cumsum(y, dtype=np.float64)[last]
    precision = tps / (last + 1.0)
    recall_step = np.diff(tps, prepend=0.0) / n_pos
    return float(np.sum(recall_step * precision))


def _joint_codes(labels: Column, predicted: Column) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Labels and predictions as codes (-1 for a null) into one sorted array of category keys."""
    label_codes, label_names = _codes(labels, "labels")
    pred_codes, pred_names = _codes(predicted, "predicted")
    if pred_codes.size != label_codes.size:
        raise InputError(f"labels and predicted differ in length: {label_codes.size} and {pred_codes.size}")
    names = np.union1d(label_names, pred_names)

    def recode(codes: np.ndarray, own: np.ndarray) -> np.ndarray:
        lookup = np.r_[np.searchsorted(names, own), -1]  # code -1 (null) picks the trailing -1
        return lookup[codes]

    return recode(label_codes, label_names), recode(pred_codes, pred_names), names


def _codes(values: Column, what: str) -> tuple[np.ndarray, np.ndarray]:
    if not isinstance(values, pa.Array | pa.ChunkedArray) and np.ndim(values) == 0:
        raise InputError(f"{what} must hold one value per row, got a scalar")
    return category_codes(values)


def _scores(scores: ArrayLike | None, count: int) -> np.ndarray | None:
    if scores is None:
        return None
    try:
        array = np.asarray(scores, dtype=np.float64).ravel()
    except (TypeError, ValueError) as exc:
        raise InputError(f"scores must be numbers: {exc}") from exc
    if array.size != count:
        raise InputError(f"scores has {array.size} rows, labels {count}")
    return array


def _sorted_classes(names: list[str]) -> list[str]:
    """Classes in scikit-learn's order: numbers by value when every class is a number, else as strings."""
    try:
        return sorted(names, key=float)
    except ValueError:
        return sorted(names)


def _positive(positive: object, seen: list[str]) -> str | None:
    """The positive class: as given, else ``"1"`` of 0/1, ``"true"`` of booleans, the larger of two."""
    if positive is not None:
        keys, nulls = category_keys(np.array([positive], dtype=object))
        if nulls[0]:
            raise InputError("positive must name a class, got NaN")
        return str(keys[0])
    if not seen:
        return None
    if set(seen) <= {"0", "1"}:
        return "1"
    if set(seen) <= set(_BOOLEAN_KEYS):
        return "true"
    if len(seen) == 2:
        return _sorted_classes(seen)[1]
    return None


def _ratio(num: float, den: float) -> float | None:
    return num / den if den else None


def _binary_prf(truth: np.ndarray, guess: np.ndarray) -> tuple[float | None, float | None, float | None]:
    tp = float(np.sum(truth & guess))
    predicted, actual = float(guess.sum()), float(truth.sum())
    return _ratio(tp, predicted), _ratio(tp, actual), _ratio(2.0 * tp, predicted + actual)


def _macro_prf(truth: np.ndarray, guess: np.ndarray, k: int) -> tuple[float | None, float | None, float | None]:
    """Unweighted means over the classes; a class whose ratio is undefined is left out of that mean."""
    tp = np.bincount(truth[truth == guess], minlength=k).astype(np.float64)
    predicted = np.bincount(guess, minlength=k).astype(np.float64)
    actual = np.bincount(truth, minlength=k).astype(np.float64)

    def mean(num: np.ndarray, den: np.ndarray) -> float | None:
        defined = den > 0
        return float(np.mean(num[defined] / den[defined])) if defined.any() else None

    return mean(tp, predicted), mean(tp, actual), mean(2.0 * tp, predicted + actual)


def _calibration(y: np.ndarray, s: np.ndarray, bins: int) -> tuple[float, tuple[CalibrationBin, ...]]:
    """Reliability bins ``(e_i, e_i+1]`` of the scores (as ``sklearn.calibration.calibration_curve``)."""
    edges = np.linspace(0.0, 1.0, bins + 1)
    ids = np.searchsorted(edges[1:-1], s)
    counts = np.bincount(ids, minlength=bins)
    sums = np.bincount(ids, weights=s, minlength=bins)
    hits = np.bincount(ids, weights=y.astype(np.float64), minlength=bins)
    filled = counts > 0
    mean = np.divide(sums, counts, out=np.zeros(bins), where=filled)
    rate = np.divide(hits, counts, out=np.zeros(bins), where=filled)
    ece = float(np.sum(counts[filled] * np.abs(mean[filled] - rate[filled])) / s.size)
    table = tuple(
        CalibrationBin(
            lower=float(edges[i]),
            upper=float(edges[i + 1]),
            count=int(counts[i]),
            mean_score=float(mean[i]) if filled[i] else None,
            observed_rate=float(rate[i]) if filled[i] else None,
        )
        for i in range(bins)
    )
    return ece, table
