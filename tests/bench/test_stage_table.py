"""The latency scenarios' stage table: one row per stage, side by side per scenario, medians over rounds."""

from __future__ import annotations

from streamml.bench.results import ScenarioResult, Summary
from streamml.bench.suite import (
    LABELS,
    LATENCY_ALO,
    LATENCY_EOS,
    LATENCY_PASS,
    STAGE_NAMES,
    SuiteOptions,
    SuiteReport,
    sections,
    stage_header,
    stage_rows,
)


def _round(p99_commit: float, with_model: bool) -> ScenarioResult:
    stages = {"poll": {"p50_ms": 1.0, "p99_ms": 4.0}, "commit": {"p50_ms": 10.0, "p99_ms": p99_commit}}
    if with_model:
        stages["predict"] = {"p50_ms": 2.0, "p99_ms": 3.0}
    return ScenarioResult("lat", 100, seconds=1.0, p50_ms=20.0, p99_ms=40.0, stages=stages)


def _report() -> SuiteReport:
    report = SuiteReport(SuiteOptions(sql=False))
    for key in (LATENCY_PASS, LATENCY_EOS, LATENCY_ALO):
        rounds = [_round(p99, key != LATENCY_PASS) for p99 in (30.0, 50.0, 70.0)]
        report.summaries[key] = Summary(key, LABELS[key], 100, rounds)
    return report


def test_each_stage_is_a_row_with_p50_and_p99_per_scenario() -> None:
    report = _report()
    header, rows = stage_header(report), stage_rows(report)
    assert len(header) == 1 + 2 * 3
    assert [row[0] for row in rows] == [
        "end to end, per record",
        STAGE_NAMES["poll"],
        STAGE_NAMES["predict"],
        STAGE_NAMES["commit"],
    ]
    assert all(len(row) == len(header) for row in rows)
    commit = rows[-1]
    assert commit[1:] == ["10.0", "50.0"] * 3  # the median of the rounds' p50 and p99
    assert rows[2][1:3] == ["-", "-"]  # the passthrough has no model


def test_the_pipeline_section_carries_the_stage_table() -> None:
    body = next(s.body for s in sections(_report()) if s.name == "pipeline")
    assert "| stage (ms per batch) |" in body and STAGE_NAMES["commit"] in body


def test_no_stage_table_without_latency_scenarios() -> None:
    report = SuiteReport(SuiteOptions(sql=False))
    assert stage_rows(report) == []
    body = next(s.body for s in sections(report) if s.name == "pipeline")
    assert "| stage" not in body
