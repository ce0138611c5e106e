"""PNG plots of training and evaluation, drawn with matplotlib's Agg canvas (no pyplot, no global state)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from sklearn import metrics as skm


def _save(figure: Figure, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    FigureCanvasAgg(figure)
    figure.tight_layout()
    figure.savefig(path, dpi=90)
    return path


def loss_curve(losses: dict[str, Sequence[float]], path: Path, title: str = "training loss") -> Path:
    """One line per named loss series (e.g. train, validation) against the epoch."""
    figure = Figure(figsize=(5, 3.5))
    axes = figure.add_subplot()
    for name, values in losses.items():
        axes.plot(np.arange(1, len(values) + 1), values, label=name)
    axes.set(xlabel="epoch", ylabel="loss", title=title, yscale="log")
    axes.legend()
    return _save(figure, path)


def score_histogram(y_true: np.ndarray, scores: np.ndarray, threshold: float | None, path: Path) -> Path:
    """Score histograms of negatives and positives with the decision threshold as a vertical line."""
    y_true = np.asarray(y_true, dtype=bool)
    scores = np.asarray(scores, dtype=np.float64)
    figure = Figure(figsize=(5, 3.5))
    axes = figure.add_subplot()
    edges, log_scale = score_bins(scores)
    bins = edges.tolist()
    axes.hist(np.clip(scores[~y_true], edges[0], edges[-1]), bins=bins, alpha=0.6, label="negative", density=True)
    axes.hist(np.clip(scores[y_true], edges[0], edges[-1]), bins=bins, alpha=0.6, label="positive", density=True)
    if log_scale:
        axes.set_xscale("log")
    if threshold is not None:
        axes.axvline(threshold, color="black", linestyle="--", label=f"threshold {threshold:.3g}")
    axes.set(xlabel="score", ylabel="density", title="scores by class (test)")
    axes.legend()
    return _save(figure, path)


def score_bins(scores: np.ndarray, bins: int = 40) -> tuple[np.ndarray, bool]:
    """Histogram edges that show how scores spread, and whether they are log-spaced.

    Scores such as reconstruction errors are positive and heavy-tailed: linear bins over their full range put
    almost everything in the first bar. Positive scores spanning more than two decades get log-spaced bins;
    other scores get linear bins over the 0.5-99.5 percentile range (values outside are drawn at the edges).
    """
    finite = scores[np.isfinite(scores)]
    if len(finite) == 0:
        return np.linspace(0.0, 1.0, bins + 1), False
    low, high = np.percentile(finite, [0.5, 99.5])
    if low > 0 and high / low > 100:
        return np.geomspace(low, high, bins + 1), True
    if high <= low:
        low, high = float(finite.min()), float(finite.max()) + 1e-12
    return np.linspace(low, high, bins + 1), False


def roc_curve(y_true: np.ndarray, scores: np.ndarray, path: Path) -> Path:
    """ROC curve with its AUC and the chance diagonal."""
    fpr, tpr, _ = skm.roc_curve(np.asarray(y_true, dtype=bool), scores)
    figure = Figure(figsize=(4.5, 4))
    axes = figure.add_subplot()
    axes.plot(fpr, tpr, label=f"AUC {skm.auc(fpr, tpr):.3f}")
    axes.plot([0, 1], [0, 1], color="grey", linestyle=":")
    axes.set(xlabel="false positive rate", ylabel="true positive rate", title="ROC (test)")
    axes.legend(loc="lower right")
    return _save(figure, path)


def pr_curve(y_true: np.ndarray, scores: np.ndarray, path: Path) -> Path:
    """Precision-recall curve with average precision and the prevalence baseline."""
    y_true = np.asarray(y_true, dtype=bool)
    precision, recall, _ = skm.precision_recall_curve(y_true, scores)
    figure = Figure(figsize=(4.5, 4))
    axes = figure.add_subplot()
    axes.plot(recall, precision, label=f"AP {skm.average_precision_score(y_true, scores):.3f}")
    axes.axhline(y_true.mean(), color="grey", linestyle=":", label="baseline")
    axes.set(xlabel="recall", ylabel="precision", title="precision-recall (test)", ylim=(0, 1.02))
    axes.legend(loc="lower left")
    return _save(figure, path)


def accuracy_curve(series: Mapping[str, Sequence[float]], path: Path) -> Path:
    """Accuracy per epoch, one line per named split (train, test)."""
    figure = Figure(figsize=(5, 3.5))
    axes = figure.add_subplot()
    for name, values in series.items():
        axes.plot(np.arange(1, len(values) + 1), values, marker="o", markersize=3, label=name)
    axes.set(xlabel="epoch", ylabel="accuracy", title="accuracy per epoch", ylim=(0, 1.02))
    axes.legend()
    return _save(figure, path)


def per_class_accuracy(accuracy: Mapping[str, float], path: Path, title: str = "per-class accuracy (test)") -> Path:
    """Accuracy (recall) of each class, as bars (by default: on the test split)."""
    figure = Figure(figsize=(1.5 + 0.5 * len(accuracy), 3.5))
    axes = figure.add_subplot()
    axes.bar(list(accuracy), list(accuracy.values()), color="tab:blue")
    axes.set(xlabel="class", ylabel="accuracy", title=title, ylim=(0, 1.02))
    return _save(figure, path)


def confusion(matrix: Sequence[Sequence[int]], classes: Sequence[str], path: Path) -> Path:
    """A confusion matrix heat map with counts (rows: true class, columns: predicted)."""
    values = np.asarray(matrix)
    figure = Figure(figsize=(1.2 + 0.6 * len(classes), 1 + 0.6 * len(classes)))
    axes = figure.add_subplot()
    axes.imshow(values, cmap="Blues")
    axes.set_xticks(range(len(classes)), labels=list(classes), rotation=45)
    axes.set_yticks(range(len(classes)), labels=list(classes))
    for (i, j), count in np.ndenumerate(values):
        axes.text(j, i, str(count), ha="center", va="center")
    axes.set(xlabel="predicted", ylabel="true", title="confusion (test)")
    return _save(figure, path)


def binary_plots(y_true: np.ndarray, scores: np.ndarray, threshold: float | None, folder: Path) -> list[Path]:
    """Score histogram, ROC and PR curves of a binary scorer, written to ``folder``."""
    return [
        score_histogram(y_true, scores, threshold, folder / "score_histogram.png"),
        roc_curve(y_true, scores, folder / "roc.png"),
        pr_curve(y_true, scores, folder / "pr.png"),
    ]
