"""Drift against reference histograms and category counts, checked against direct and SciPy computations."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.stats
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.spatial.distance import jensenshannon

from streamml.errors import InputError
from streamml.models.stats import ColumnStats, ReferenceStats, category_stats, column_stats, reference_stats
from streamml.monitor.drift import (
    METRIC_DRIFTED_FEATURES,
    METRIC_PSI_MAX,
    PSI_EPSILON,
    chi2_sf,
    column_drift,
    drift_summary,
    feature_drift,
    output_drift,
)

samples = st.lists(st.floats(-50, 50, allow_nan=False, width=32), min_size=1, max_size=60)


def binned(reference: ColumnStats, live: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Reference and live proportions the plain way: clip live into the reference range, then np.histogram."""
    edges = np.array(reference.bin_edges)
    counts, _ = np.histogram(np.clip(live, edges[0], edges[-1]), bins=edges)
    return np.array(reference.bin_counts) / sum(reference.bin_counts), counts / live.size


def two_sample_ks(a: np.ndarray, b: np.ndarray) -> float:
    """The KS statistic of two raw samples: the largest gap between their empirical CDFs."""
    points = np.concatenate([a, b])
    gap = np.searchsorted(np.sort(a), points, "right") / a.size - np.searchsorted(np.sort(b), points, "right") / b.size
    return float(np.max(np.abs(gap)))


@settings(max_examples=60, deadline=None)
@given(ref=samples, live=samples, bins=st.integers(1, 12))
def test_numeric_distances_match_direct_computation(ref: list[float], live: list[float], bins: int) -> None:
    reference = column_stats(np.array(ref), bins=bins)
    values = np.array(live)
    drift = column_drift("x", reference, values)
    p_ref, p_live = binned(reference, values)
    a, b = np.maximum(p_ref, PSI_EPSILON), np.maximum(p_live, PSI_EPSILON)
    assert drift.psi == pytest.approx(float(np.sum((b - a) * np.log(b / a))), abs=1e-12)
    assert drift.js == pytest.approx(float(jensenshannon(p_ref, p_live, base=2)), abs=1e-7)
    # KS on the reference bins never exceeds the KS statistic of the raw samples
    assert drift.ks is not None
    assert drift.ks <= two_sample_ks(np.array(ref), values) + 1e-12
    edges = np.array(reference.bin_edges)
    assert drift.outside == int(np.sum((values < edges[0]) | (values > edges[-1])))
    assert drift.wasserstein is not None and drift.wasserstein >= 0.0
    assert drift.kind == "numeric" and drift.drifted == (drift.psi > 0.2)


def test_ks_is_exact_when_both_samples_sit_on_bin_midpoints() -> None:
    rng = np.random.default_rng(1)
    reference = ColumnStats(count=100, bin_edges=[0.0, 1.0, 2.0, 3.0, 4.0], bin_counts=[10, 40, 30, 20])
    ref_sample = np.repeat([0.5, 1.5, 2.5, 3.5], [10, 40, 30, 20])
    live = rng.choice([-1.0, 0.5, 1.5, 2.5, 3.5, 5.0], size=500)
    drift = column_drift("x", reference, live)
    assert drift.ks == pytest.approx(scipy.stats.ks_2samp(ref_sample, live).statistic, abs=1e-12)


def test_wasserstein_treats_the_reference_as_uniform_within_bins() -> None:
    one_bin = ColumnStats(count=10, bin_edges=[0.0, 1.0], bin_counts=[10])
    assert column_drift("x", one_bin, [0.5]).wasserstein == pytest.approx(0.25, abs=1e-12)
    assert column_drift("x", one_bin, [3.0]).wasserstein == pytest.approx(2.5, abs=1e-12)  # mean 0.5 moved to 3
    rng = np.random.default_rng(2)
    reference = column_stats(rng.gamma(2.0, size=4000), bins=15)
    live = rng.normal(3.0, 1.5, size=700)
    # the reference as a sample: a fine grid of evenly spaced points inside each bin, in proportion to its count
    edges, counts = np.array(reference.bin_edges), np.array(reference.bin_counts)
    grid = np.concatenate(
        [
            lo + (hi - lo) * (np.arange(c * 40) + 0.5) / (c * 40)
            for lo, hi, c in zip(edges, edges[1:], counts, strict=False)
        ]
    )
    expected = scipy.stats.wasserstein_distance(grid, live)
    assert column_drift("x", reference, live).wasserstein == pytest.approx(expected, abs=1e-4)


def test_nulls_are_counted_not_binned() -> None:
    reference = column_stats(np.linspace(0, 1, 101), bins=4)
    clean = column_drift("x", reference, np.array([0.1, 0.6, 0.9]))
    dirty = column_drift("x", reference, np.array([0.1, np.nan, 0.6, np.inf, 0.9, None], dtype=object))
    assert (dirty.live_count, dirty.live_nulls) == (3, 3)
    assert (dirty.psi, dirty.ks, dirty.wasserstein) == (clean.psi, clean.ks, clean.wasserstein)
    only_nulls = column_drift("x", reference, [np.nan, np.nan])
    assert (only_nulls.live_count, only_nulls.live_nulls, only_nulls.psi, only_nulls.drifted) == (0, 2, None, False)
    empty_reference = column_drift("x", ColumnStats(count=0, null_count=5), [1.0, 2.0])
    assert empty_reference.psi is None and empty_reference.ks is None
    with pytest.raises(InputError, match="'x'"):
        column_drift("x", reference, ["a", "b"])


def test_categorical_drift_matches_scipy() -> None:
    rng = np.random.default_rng(3)
    reference = category_stats(rng.choice(["a", "b", "c"], p=[0.5, 0.3, 0.2], size=2000))
    live = np.array([*rng.choice(["a", "b", "d"], p=[0.4, 0.4, 0.2], size=600), None, None], dtype=object)
    drift = column_drift("colour", reference, live)
    assert drift.kind == "categorical" and (drift.live_count, drift.live_nulls) == (600, 2)
    names = ["a", "b", "c", "d"]
    ref_counts = np.array([reference.categories.get(n, 0) for n in names], dtype=float)
    live_counts = np.array([np.sum(live == n) for n in names], dtype=float)
    assert drift.outside == live_counts[3]
    assert drift.js == pytest.approx(jensenshannon(ref_counts, live_counts, base=2), abs=1e-7)
    chi2, p, _, _ = scipy.stats.chi2_contingency(np.vstack([ref_counts, live_counts]), correction=False)
    assert drift.chi2 == pytest.approx(chi2, rel=1e-12)
    assert drift.chi2_p == pytest.approx(p, rel=1e-9)
    assert drift.drifted  # a new category at 20 % is far past JS 0.1
    same = column_drift("colour", reference, rng.choice(["a", "b", "c"], p=[0.5, 0.3, 0.2], size=600))
    assert not same.drifted and same.outside == 0 and same.chi2_p is not None and same.chi2_p > 1e-3


@pytest.mark.parametrize("dof", [1, 2, 3, 7, 30, 200, 1000])
def test_chi2_survival_matches_scipy(dof: int) -> None:
    for statistic in np.r_[0.0, np.geomspace(1e-3, 5.0 * dof + 50.0, 25)]:
        expected = scipy.stats.chi2.sf(statistic, dof)
        assert chi2_sf(float(statistic), dof) == pytest.approx(expected, rel=1e-9, abs=1e-300)


def test_category_stats_keys_and_json_round_trip() -> None:
    stats = category_stats(np.array(["x", 1, 1.0, True, None, float("nan"), "x"], dtype=object))
    assert stats.categories == {"x": 2, "1": 2, "true": 1} and (stats.count, stats.null_count) == (5, 2)
    assert ColumnStats.model_validate_json(stats.model_dump_json()) == stats
    old = ColumnStats.model_validate_json('{"count": 3, "bin_edges": [0, 1], "bin_counts": [3]}')
    assert old.categories == {}  # cards written before categories existed still load
    assert column_drift("n", category_stats([1, 2, 2]), np.array([2.0, 2.0, 1.0])).js == pytest.approx(0.0)


def test_feature_and_output_drift_over_a_reference() -> None:
    rng = np.random.default_rng(4)
    x = rng.standard_normal((5000, 3))
    scores = 1 / (1 + np.exp(-x[:, 0]))
    reference = reference_stats(x, ["a", "b", "c"], {"score": scores})
    live = rng.standard_normal((2000, 3))
    live[:, 1] += 1.5  # "b" moves
    drifts = feature_drift(reference, {"a": live[:, 0], "b": live[:, 1], "c": live[:, 2], "unknown": live[:, 0]})
    assert set(drifts) == {"a", "b", "c"}
    assert [drifts[n].drifted for n in "abc"] == [False, True, False]
    assert drifts["b"].psi is not None and drifts["b"].psi > 1.0
    assert drifts["b"].wasserstein == pytest.approx(1.5, abs=0.1)
    summary = drift_summary(drifts)
    assert summary[METRIC_PSI_MAX] == drifts["b"].psi and summary[METRIC_DRIFTED_FEATURES] == 1
    shifted = output_drift(reference, {"score": 1 / (1 + np.exp(-(live[:, 0] + 1.0)))})
    assert shifted["score"].drifted
    assert drift_summary({}) == {METRIC_PSI_MAX: None, "drift_js_max": None, METRIC_DRIFTED_FEATURES: 0.0}
    with_categories = ReferenceStats(rows=3, features={"k": category_stats(["u", "v", "v"])})
    assert feature_drift(with_categories, {"k": np.array(["v", "v"])})["k"].to_dict()["kind"] == "categorical"
