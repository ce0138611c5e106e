"""Drift of live data against the reference statistics a model card keeps: has the input moved?

The card keeps a summary per column (:class:`streamml.models.stats.ColumnStats`), not the training rows,
so each numeric distance below is computed between the live sample and the reference *histogram*:

- PSI, population stability index, over the reference bins: ``sum((p_live - p_ref) * ln(p_live / p_ref))``.
  Live values below the first edge count in the first bin, above the last edge in the last (as
  ``np.histogram`` bins, each bin is ``[e_i, e_i+1)``, the last one closed). A proportion of 0 on either
  side is replaced by :data:`PSI_EPSILON` (1e-4) before the logarithm, without renormalising.
- KS: ``max |F_live - F_ref|`` taken just below every edge (and at the last edge), where both CDFs are
  known exactly. It is the Kolmogorov-Smirnov distance of the two samples coarsened to the reference
  bins (live values outside the edges keep their own side), so it never exceeds the two-sample KS
  statistic of the raw samples (and equals it when, for one, every value of both lies on a bin midpoint).
- Wasserstein-1: ``integral |F_live(x) - F_ref(x)| dx`` exactly, with the reference spread uniformly
  within each bin (its CDF linear between edges, 0 below and 1 above) and the live CDF the empirical one.
- Jensen-Shannon distance (base 2, in [0, 1]) between the binned proportions (outside values clipped
  as for PSI; no epsilon needed).

A categorical column (a reference with ``categories``, made by :func:`streamml.models.stats.category_stats`)
gets PSI and Jensen-Shannon over the union of categories, and the chi-square test of homogeneity on the
2 x k table of reference and live counts (no continuity correction), with its p-value from the regularised
upper incomplete gamma function. Nulls (None, NaN, infinities for numbers) are counted, never binned.

A numeric feature has drifted when PSI exceeds :data:`PSI_THRESHOLD` (0.2, the usual "significant shift"),
a categorical one when the Jensen-Shannon distance exceeds :data:`JS_THRESHOLD` (0.1, Evidently's default).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any, Literal

import numpy as np

from streamml.errors import InputError
from streamml.models.stats import Column, ColumnStats, ReferenceStats, category_codes

__all__ = [
    "JS_THRESHOLD",
    "METRIC_DRIFTED_FEATURES",
    "METRIC_JS_MAX",
    "METRIC_PSI_MAX",
    "PSI_EPSILON",
    "PSI_THRESHOLD",
    "FeatureDrift",
    "chi2_sf",
    "column_drift",
    "drift_summary",
    "feature_drift",
    "output_drift",
]

#: PSI above this is a significant shift
PSI_THRESHOLD = 0.2
#: Jensen-Shannon distance (base 2) above this is a shift of a categorical column
JS_THRESHOLD = 0.1
#: stands in for a bin or category proportion of 0 in PSI
PSI_EPSILON = 1e-4
#: names :func:`drift_summary` gives its values (the metrics alert rules watch)
METRIC_PSI_MAX = "drift_psi_max"
METRIC_JS_MAX = "drift_js_max"
METRIC_DRIFTED_FEATURES = "drifted_features"


@dataclass(frozen=True)
class FeatureDrift:
    """Drift of one column; a distance is None when either side has no values (or is not defined for the kind)."""

    name: str
    kind: Literal["numeric", "categorical"]
    reference_count: int
    #: live values that were compared (not null)
    live_count: int
    #: live nulls (None, NaN; infinities for a numeric column), counted apart
    live_nulls: int
    #: live values outside the reference: beyond the histogram's edges, or in categories it never saw
    outside: int
    psi: float | None
    js: float | None
    ks: float | None = None
    wasserstein: float | None = None
    chi2: float | None = None
    chi2_p: float | None = None
    drifted: bool = False

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready view."""
        return asdict(self)


def feature_drift(
    reference: ReferenceStats,
    live: Mapping[str, Column],
    *,
    psi_threshold: float = PSI_THRESHOLD,
    js_threshold: float = JS_THRESHOLD,
) -> dict[str, FeatureDrift]:
    """Drift of every reference feature present in ``live`` (a column of values per feature name)."""
    return _drift(reference.features, live, psi_threshold, js_threshold)


def output_drift(
    reference: ReferenceStats,
    live: Mapping[str, Column],
    *,
    psi_threshold: float = PSI_THRESHOLD,
    js_threshold: float = JS_THRESHOLD,
) -> dict[str, FeatureDrift]:
    """Drift of the model's outputs (scores, predictions) present in ``live`` against ``reference.outputs``."""
    return _drift(reference.outputs, live, psi_threshold, js_threshold)


def drift_summary(drifts: Mapping[str, FeatureDrift]) -> dict[str, float | None]:
    """The largest PSI and Jensen-Shannon distance over the columns and how many drifted, for alert rules."""
    psis = [d.psi for d in drifts.values() if d.psi is not None]
    jss = [d.js for d in drifts.values() if d.js is not None]
    return {
        METRIC_PSI_MAX: max(psis) if psis else None,
        METRIC_JS_MAX: max(jss) if jss else None,
        METRIC_DRIFTED_FEATURES: float(sum(d.drifted for d in drifts.values())),
    }


def _drift(
    stats: Mapping[str, ColumnStats], live: Mapping[str, Column], psi_threshold: float, js_threshold: float
) -> dict[str, FeatureDrift]:
    return {
        name: column_drift(name, stats[name], values, psi_threshold=psi_threshold, js_threshold=js_threshold)
        for name, values in live.items()
        if name in stats
    }


def column_drift(
    name: str,
    reference: ColumnStats,
    live: Column,
    *,
    psi_threshold: float = PSI_THRESHOLD,
    js_threshold: float = JS_THRESHOLD,
) -> FeatureDrift:
    """Drift of one live column against its reference statistics (categorical when they hold categories)."""
    if reference.categories:
        return _categorical(name, reference, live, js_threshold)
    return _numeric(name, reference, live, psi_threshold)


def _numeric(name: str, reference: ColumnStats, live: Column, psi_threshold: float) -> FeatureDrift:
    try:
        values = np.asarray(live, dtype=np.float64).ravel()
    except (TypeError, ValueError) as exc:
        raise InputError(f"feature '{name}' has a numeric reference but non-numeric live values: {exc}") from exc
    finite = values[np.isfinite(values)]
    nulls = int(values.size - finite.size)
    edges = np.asarray(reference.bin_edges, dtype=np.float64)
    ref_counts = np.asarray(reference.bin_counts, dtype=np.float64)
    usable = edges.size >= 2 and edges.size == ref_counts.size + 1 and ref_counts.sum() > 0 and finite.size > 0
    outside = int(np.sum((finite < edges[0]) | (finite > edges[-1]))) if edges.size >= 2 else 0
    if not usable:
        return FeatureDrift(name, "numeric", reference.count, int(finite.size), nulls, outside, None, None)
    bins = ref_counts.size
    index = np.clip(np.searchsorted(edges, finite, side="right") - 1, 0, bins - 1)
    live_counts = np.bincount(index, minlength=bins).astype(np.float64)
    p_ref, p_live = ref_counts / ref_counts.sum(), live_counts / finite.size
    psi = _psi(p_ref, p_live)
    ordered = np.sort(finite)
    ref_cdf = np.r_[0.0, np.cumsum(ref_counts) / ref_counts.sum()]
    live_below = np.searchsorted(ordered, edges, side="left").astype(np.float64)
    live_below[-1] = np.searchsorted(ordered, edges[-1], side="right")
    ks = float(np.max(np.abs(live_below / finite.size - ref_cdf)))
    return FeatureDrift(
        name,
        "numeric",
        reference.count,
        int(finite.size),
        nulls,
        outside,
        psi=psi,
        js=_js(p_ref, p_live),
        ks=ks,
        wasserstein=_wasserstein(edges, ref_cdf, ordered),
        drifted=psi > psi_threshold,
    )


def _categorical(name: str, reference: ColumnStats, live: Column, js_threshold: float) -> FeatureDrift:
    codes, live_names = category_codes(live)
    live_counts = np.bincount(codes[codes >= 0], minlength=live_names.size)
    n_nulls = int(np.sum(codes < 0))
    ref_names = np.array(list(reference.categories), dtype=np.str_)
    ref_counts = np.array(list(reference.categories.values()), dtype=np.float64)
    names = np.union1d(ref_names, live_names)
    ref_side = np.zeros(names.size)
    ref_side[np.searchsorted(names, ref_names)] = ref_counts
    live_side = np.zeros(names.size)
    live_side[np.searchsorted(names, live_names)] = live_counts
    n_live = int(live_counts.sum())
    outside = int(live_side[ref_side == 0].sum())
    if n_live == 0 or ref_side.sum() == 0:
        return FeatureDrift(name, "categorical", reference.count, n_live, n_nulls, outside, None, None)
    p_ref, p_live = ref_side / ref_side.sum(), live_side / n_live
    js = _js(p_ref, p_live)
    chi2, dof = _chi2_homogeneity(ref_side, live_side)
    return FeatureDrift(
        name,
        "categorical",
        reference.count,
        n_live,
        n_nulls,
        outside,
        psi=_psi(p_ref, p_live),
        js=js,
        chi2=chi2,
        chi2_p=chi2_sf(chi2, dof) if dof > 0 else 1.0,
        drifted=js > js_threshold,
    )


def _psi(p_ref: np.ndarray, p_live: np.ndarray) -> float:
    ref, live = np.maximum(p_ref, PSI_EPSILON), np.maximum(p_live, PSI_EPSILON)
    return float(np.sum((live - ref) * np.log(live / ref)))


def _js(p: np.ndarray, q: np.ndarray) -> float:
    """Jensen-Shannon distance, base 2: sqrt of the mean KL divergence of each side from their midpoint."""
    m = (p + q) / 2.0

    def kl(a: np.ndarray) -> float:
        present = a > 0
        return float(np.sum(a[present] * np.log2(a[present] / m[present])))

    return math.sqrt(max((kl(p) + kl(q)) / 2.0, 0.0))


def _wasserstein(edges: np.ndarray, ref_cdf: np.ndarray, ordered: np.ndarray) -> float:
    """Exact integral of |F_live - F_ref| with F_ref linear within bins and F_live a step function."""
    points = np.sort(np.concatenate([edges, ordered]))
    length = np.diff(points)
    live = np.searchsorted(ordered, points[:-1], side="right") / ordered.size
    d1 = live - np.interp(points[:-1], edges, ref_cdf)
    d2 = live - np.interp(points[1:], edges, ref_cdf)
    same_side = d1 * d2 >= 0
    spread = np.abs(d1 - d2)
    crossing = np.divide(d1 * d1 + d2 * d2, 2.0 * spread, out=np.zeros_like(spread), where=spread > 0)
    return float(np.sum(length * np.where(same_side, np.abs(d1 + d2) / 2.0, crossing)))


def _chi2_homogeneity(ref: np.ndarray, live: np.ndarray) -> tuple[float, int]:
    """Pearson's statistic of the 2 x k table (reference, live) and its degrees of freedom, k - 1."""
    table = np.vstack([ref, live])
    expected = table.sum(axis=1, keepdims=True) * table.sum(axis=0, keepdims=True) / table.sum()
    return float(np.sum((table - expected) ** 2 / expected)), int(table.shape[1] - 1)


def chi2_sf(statistic: float, dof: int) -> float:
    """P(X >= statistic) for X chi-square with ``dof`` degrees of freedom: Q(dof / 2, statistic / 2)."""
    if dof <= 0:
        raise InputError(f"chi-square needs at least one degree of freedom, got {dof}")
    return _gamma_q(dof / 2.0, max(statistic, 0.0) / 2.0)


def _gamma_q(a: float, x: float) -> float:
    """Regularised upper incomplete gamma Q(a, x): a series below ``a + 1``, a continued fraction above."""
    if x <= 0.0:
        return 1.0
    log_prefix = a * math.log(x) - x - math.lgamma(a)
    if x < a + 1.0:  # P(a, x) = x^a e^-x / Gamma(a + 1) * sum x^n / ((a + 1) ... (a + n))
        term = total = 1.0 / a
        n = a
        for _ in range(100_000):
            n += 1.0
            term *= x / n
            total += term
            if abs(term) < abs(total) * 1e-16:
                break
        return max(0.0, 1.0 - total * math.exp(log_prefix))
    tiny = 1e-300  # modified Lentz evaluation of the continued fraction for Q
    b = x + 1.0 - a
    c = 1.0 / tiny
    d = 1.0 / b
    h = d
    for i in range(1, 100_000):
        an = -i * (i - a)
        b += 2.0
        d = an * d + b
        d = tiny if abs(d) < tiny else d
        c = b + an / c
        c = tiny if abs(c) < tiny else c
        d = 1.0 / d
        delta = d * c
        h *= delta
        if abs(delta - 1.0) < 1e-16:
            break
    return math.exp(log_prefix) * h
