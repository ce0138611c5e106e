"""The worker loop's stage timer: one observation per batch and stage, read back per stage in loop order."""

from __future__ import annotations

from streamml.runtime.metrics import STAGES, QueryMetrics, StageTimes


def test_each_batch_counts_once_per_stage_and_stages_come_in_loop_order() -> None:
    times = StageTimes()
    for ms in (1.0, 2.0, 40.0):  # three batches
        times.add("commit", ms)
        times.add("poll", ms / 10)
    with times.time("decode"):
        pass
    snapshot = times.snapshot()
    assert list(snapshot) == ["poll", "decode", "commit"]
    assert [snapshot[s]["count"] for s in snapshot] == [3, 1, 3]
    commit = snapshot["commit"]
    assert commit["total_ms"] == 43.0 and commit["mean_ms"] == round(43.0 / 3, 3)
    assert commit["p50_ms"] is not None and commit["p99_ms"] is not None
    assert 2.0 <= commit["p50_ms"] < 2.1 and 40.0 <= commit["p99_ms"] < 41.0  # within the histogram's 1.5%
    assert commit["p95_ms"] is not None and 40.0 <= commit["p95_ms"] < 41.0


def test_a_query_snapshot_carries_its_stages_next_to_its_latency() -> None:
    metrics = QueryMetrics("q1")
    assert metrics.snapshot()["stages"] == {}
    metrics.stages.add("predict", 3.0)
    metrics.stages.add("unnamed", 1.0)  # a stage outside STAGES is listed after them
    snapshot = metrics.snapshot()
    assert list(snapshot["stages"]) == ["predict", "unnamed"] and "latency_p99_ms" in snapshot
    assert "predict" in STAGES
