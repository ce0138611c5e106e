"""The quick suite at a tiny size against the test broker: structure and completeness only, never timings."""

from __future__ import annotations

import pytest

from streamml.bench import SuiteOptions, run_suite, sections
from streamml.bench.suite import (
    LABELS,
    LATENCY_ALO,
    PIPELINE_HEADER,
    SQL_HEADER,
    STATELESS_ALO,
    TWO,
    pipeline_rows,
    sql_rows,
)
from streamml.config import Settings

pytestmark = [pytest.mark.broker, pytest.mark.slow]


def test_every_scenario_reports_a_number_or_why_not(kafka_settings: Settings) -> None:
    skip = frozenset({TWO, LATENCY_ALO, STATELESS_ALO})  # variants of paths the others cover
    options = SuiteOptions.quick(records=2_000, loop_records=200, latency_s=2.0, latency_rate=1_000, skip=skip)
    report = run_suite(kafka_settings, options)

    assert set(report.summaries) == set(LABELS) - skip
    for key, summary in report.summaries.items():
        assert len(summary.rounds) == 1, key
        if summary.ok:
            assert summary.records_per_s and summary.records_per_s > 0, key
        else:
            assert summary.status in ("FAILED", "SKIPPED") and summary.error, key
            assert summary.records_per_s is None, "a failed scenario must not show a number"
    # the harness's own scenarios depend on nothing but Kafka and ONNX Runtime
    assert report.summaries["a"].ok, report.summaries["a"].error
    assert report.summaries["e"].ok, report.summaries["e"].error
    latency = report.summaries["lat-eos"]
    assert not latency.ok or (latency.p50_ms is not None and latency.p99_ms is not None)

    assert all(len(row) == len(PIPELINE_HEADER) for row in pipeline_rows(report))
    assert all(len(row) == len(SQL_HEADER) for row in sql_rows(report))
    names = [s.name for s in sections(report)]
    assert names == ["pipeline", "sql-queries"]
    assert all("| target | measured | met |" in s.body or s.name == "sql-queries" for s in sections(report))
