"""The latency histogram: quantiles within its resolution, the coarse export consistent with the counts."""

from __future__ import annotations

import numpy as np

from streamml.models.recipes.plots import score_bins
from streamml.runtime.metrics import LATENCY_BUCKETS_MS, LatencyHistogram


def test_quantiles_are_within_two_percent_of_the_measured_values() -> None:
    rng = np.random.default_rng(7)
    latencies = rng.lognormal(mean=np.log(40), sigma=0.8, size=50_000)
    histogram = LatencyHistogram()
    for chunk in np.array_split(latencies, 25):  # a batch at a time
        histogram.observe(chunk)
    for q in (0.5, 0.95, 0.99):
        exact = float(np.quantile(latencies, q))
        got = histogram.quantile(q)
        assert got is not None and abs(got - exact) / exact < 0.02, (q, got, exact)


def test_the_coarse_export_counts_what_each_bound_holds() -> None:
    histogram = LatencyHistogram()
    values = np.array([0.5, 1.0, 3.0, 99.0, 100.0, 150.0, 70_000.0])
    histogram.observe(values)
    expected = [int(np.count_nonzero(values <= b)) for b in LATENCY_BUCKETS_MS]
    assert histogram.cumulative() == expected
    assert histogram.count == len(values)


def test_heavy_tailed_scores_get_bins_that_spread_them() -> None:
    rng = np.random.default_rng(3)
    scores = np.concatenate([rng.lognormal(-3, 1.0, 9_900), rng.lognormal(2, 1.0, 100)])  # errors, 1% anomalies
    edges, log_scale = score_bins(scores)
    counts, _ = np.histogram(np.clip(scores, edges[0], edges[-1]), bins=edges)
    assert log_scale
    assert counts.max() < 0.2 * len(scores)  # linear bins over the full range put ~99% in the first bar
    assert np.count_nonzero(counts) > 20
