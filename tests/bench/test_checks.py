"""The completeness checks and statistics the benchmark reports rest on (no broker)."""

from __future__ import annotations

import orjson
import pytest

from streamml.bench.data import check_counts, check_ids, output_ids
from streamml.bench.results import ScenarioResult, Summary, percentile


def test_every_id_exactly_once_or_a_reason() -> None:
    assert check_ids([2, 0, 1], range(3)) is None
    assert check_ids([0, 1, 1, 2], range(3)) == "output incomplete: 0 Ids missing, 1 duplicated, 0 unexpected"
    assert check_ids([0, 7], range(3)) == "output incomplete: 2 Ids missing, 0 duplicated, 1 unexpected"


def test_output_ids_read_source_and_sql_spelling() -> None:
    assert output_ids([orjson.dumps({"Id": 3}), None, orjson.dumps({"ID": 4, "P": {}})]) == [3, 4]


def test_windowed_counts_take_the_latest_value_per_key() -> None:
    rows = [(b"a@0", b'{"N": 1}'), (b"a@0", b'{"N": 2}'), (b"b@0", b'{"N": 1}')]
    assert check_counts(rows, 3) is None
    assert check_counts(rows, 4) == "windowed counts sum to 3, expected 4"


def test_percentile_interpolates() -> None:
    assert percentile([1, 2, 3, 4], 0.5) == pytest.approx(2.5)
    assert percentile([5], 0.99) == 5


def test_a_failed_round_fails_the_summary_and_hides_its_numbers() -> None:
    good = ScenarioResult("x", 100, seconds=1.0)
    bad = ScenarioResult("x", 100, seconds=0.5, error="output incomplete")
    summary = Summary("x", "x", 100, [good, bad])
    assert not summary.ok and summary.status == "FAILED" and summary.records_per_s is None
    assert Summary("x", "x", 100, [good]).records_per_s == 100
