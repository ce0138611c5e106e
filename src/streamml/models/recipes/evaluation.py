"""Evaluation shared by recipes: binary metrics at a threshold, threshold choice, multiclass metrics."""

from __future__ import annotations

from typing import Any

import numpy as np
from sklearn import metrics as skm

from streamml.errors import ModelError


def choose_threshold(
    y_true: np.ndarray, scores: np.ndarray, rule: str = "f1", precision_floor: float | None = None
) -> tuple[float, str]:
    """A decision threshold on validation scores (higher score = positive).

    ``rule="f1"`` maximises F1; ``rule="precision_floor"`` takes the threshold with the best recall whose
    precision is at least ``precision_floor`` (falling back to best F1 when no threshold reaches it).
    """
    y_true = np.asarray(y_true, dtype=bool)
    if y_true.all() or not y_true.any():
        raise ModelError("the validation split needs both classes to choose a threshold")
    precision, recall, thresholds = skm.precision_recall_curve(y_true, scores)
    precision, recall = precision[:-1], recall[:-1]
    f1 = np.divide(
        2 * precision * recall, precision + recall, out=np.zeros_like(precision), where=precision + recall > 0
    )
    if rule == "precision_floor":
        if precision_floor is None:
            raise ModelError("threshold rule 'precision_floor' needs the parameter precision_floor")
        ok = precision >= precision_floor
        if ok.any():
            best = int(np.flatnonzero(ok)[np.argmax(recall[ok])])
            return float(thresholds[best]), f"max recall at precision >= {precision_floor:g} (validation)"
        rule = "f1"
    if rule != "f1":
        raise ModelError(f"unknown threshold rule '{rule}'", hint="use f1 or precision_floor")
    best = int(np.argmax(f1))
    return float(thresholds[best]), "best F1 on validation"


def validation_summary(y_true: np.ndarray, scores: np.ndarray, threshold: float) -> dict[str, float]:
    """Precision and recall at ``threshold`` on the validation rows that chose it."""
    predicted = np.asarray(scores) >= threshold
    y_true = np.asarray(y_true, dtype=bool)
    return {
        "validation_precision": float(skm.precision_score(y_true, predicted, zero_division=0)),
        "validation_recall": float(skm.recall_score(y_true, predicted, zero_division=0)),
    }


def binary_metrics(y_true: np.ndarray, scores: np.ndarray, threshold: float | None) -> dict[str, Any]:
    """ROC AUC, PR AUC (average precision), the trivial baseline, and precision/recall/F1 at ``threshold``."""
    y_true = np.asarray(y_true, dtype=bool)
    scores = np.asarray(scores, dtype=np.float64)
    prevalence = float(y_true.mean())
    result: dict[str, Any] = {
        "rows": len(y_true),
        "positives": int(y_true.sum()),
        "baseline_pr_auc": prevalence,
        "baseline_f1": 2 * prevalence / (1 + prevalence) if prevalence else 0.0,
    }
    if 0 < y_true.sum() < len(y_true):
        result["roc_auc"] = float(skm.roc_auc_score(y_true, scores))
        result["pr_auc"] = float(skm.average_precision_score(y_true, scores))
    if threshold is not None:
        predicted = scores >= threshold
        result.update(
            threshold=float(threshold),
            precision=float(skm.precision_score(y_true, predicted, zero_division=0)),
            recall=float(skm.recall_score(y_true, predicted, zero_division=0)),
            f1=float(skm.f1_score(y_true, predicted, zero_division=0)),
            confusion_matrix=skm.confusion_matrix(y_true, predicted, labels=[False, True]).tolist(),
        )
    return result


def multiclass_metrics(y_true: np.ndarray, y_pred: np.ndarray, classes: list[str]) -> dict[str, Any]:
    """Accuracy, macro F1, majority-class baseline and the confusion matrix (rows: true, columns: predicted)."""
    y_true = np.asarray(y_true).astype(str)
    y_pred = np.asarray(y_pred).astype(str)
    counts = np.array([(y_true == c).sum() for c in classes])
    return {
        "rows": len(y_true),
        "accuracy": float(skm.accuracy_score(y_true, y_pred)),
        "macro_f1": float(skm.f1_score(y_true, y_pred, labels=classes, average="macro", zero_division=0)),
        "baseline_accuracy": float(counts.max() / max(len(y_true), 1)),
        "classes": classes,
        "confusion_matrix": skm.confusion_matrix(y_true, y_pred, labels=classes).tolist(),
    }


def lead_time_metrics(failure: np.ndarray, lead: np.ndarray, alert: np.ndarray) -> dict[str, Any]:
    """How early alerts came before failures: one entry per window in the horizon of a failure event.

    ``failure`` identifies the event a window precedes, ``lead`` is how many readings before that event the
    window ends, ``alert`` whether its score reached the threshold. An event is caught when any of its
    windows alerted; its lead time is the largest ``lead`` among those (the first alert). Returns the number
    of events (``failures``), the share caught (``failures_caught``) and the median and mean lead time in
    readings over the caught events (``lead_time_median``, ``lead_time_mean``; None when none was caught).
    """
    failure = np.asarray(failure).reshape(-1)
    lead = np.asarray(lead, dtype=np.int64).reshape(-1)
    alert = np.asarray(alert, dtype=bool).reshape(-1)
    if not len(failure) == len(lead) == len(alert):
        raise ModelError("failure, lead and alert need one entry per window")
    events, event = np.unique(failure, return_inverse=True)
    first = np.full(len(events), -1, dtype=np.int64)
    np.maximum.at(first, event[alert], lead[alert])  # per event, the earliest alerting window
    caught = first[first >= 0]
    return {
        "failures": len(events),
        "failures_caught": float(len(caught) / len(events)) if len(events) else None,
        "lead_time_median": float(np.median(caught)) if len(caught) else None,
        "lead_time_mean": float(caught.mean()) if len(caught) else None,
    }
