"""Alert rules with hysteresis: one alert per change of state, state that survives a restart."""

from __future__ import annotations

import math

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from streamml.errors import ConfigError, InputError
from streamml.monitor.alerts import (
    METRIC_ACCURACY,
    METRIC_DEAD_LETTER_RATE,
    METRIC_LATENCY_P99,
    Alert,
    Alerter,
    AlertRule,
    AlertState,
    default_rules,
)
from streamml.monitor.drift import METRIC_PSI_MAX

MINUTE = 60_000


def feed(alerter: Alerter, metric: str, values: list[float | None], start: int = 0) -> list[list[Alert]]:
    return [
        alerter.observe("fraud", 3, (start + i) * MINUTE, (start + i + 1) * MINUTE, {metric: v})
        for i, v in enumerate(values)
    ]


def states(batches: list[list[Alert]]) -> list[str]:
    return ["".join(a.state.value[0] for a in batch) or "-" for batch in batches]


def test_fires_once_stays_quiet_and_resolves_past_the_clear_threshold() -> None:
    alerter = Alerter([AlertRule(METRIC_PSI_MAX, "above", 0.2, clear=0.1)])
    batches = feed(alerter, METRIC_PSI_MAX, [0.05, 0.25, 0.4, 0.15, 0.3, 0.1, 0.15, 0.21])
    #                                       ok    fire  bad  between bad  clear  ok   fire
    assert states(batches) == ["-", "F", "-", "-", "-", "R", "-", "F"]
    fired, resolved = batches[1][0], batches[5][0]
    assert (fired.model, fired.version, fired.metric, fired.value, fired.threshold) == (
        "fraud",
        3,
        METRIC_PSI_MAX,
        0.25,
        0.2,
    )
    assert (fired.window_start_ms, fired.window_end_ms, fired.state) == (MINUTE, 2 * MINUTE, AlertState.FIRING)
    assert (resolved.state, resolved.threshold, resolved.value) == (AlertState.RESOLVED, 0.1, 0.1)
    assert "fraud v3" in fired.message and "0.25 above 0.2" in fired.message and "\n" not in fired.message
    decoded = orjson.loads(fired.to_json())
    assert decoded["state"] == "FIRING" and decoded["metric"] == METRIC_PSI_MAX and decoded["version"] == 3


def test_for_windows_needs_consecutive_breaches_and_below_rules() -> None:
    alerter = Alerter([AlertRule(METRIC_ACCURACY, "below", 0.9, clear=0.92, for_windows=3)])
    batches = feed(alerter, METRIC_ACCURACY, [0.85, 0.8, 0.95, 0.8, 0.8, 0.7, 0.6, 0.91, 0.93])
    assert states(batches) == ["-", "-", "-", "-", "-", "F", "-", "-", "R"]
    assert "for 3 windows" in batches[5][0].message


def test_missing_values_change_nothing_and_old_windows_are_ignored() -> None:
    alerter = Alerter([AlertRule(METRIC_ACCURACY, "below", 0.9, for_windows=2)])
    batches = feed(alerter, METRIC_ACCURACY, [0.5, None, math.nan, 0.5])
    assert states(batches) == ["-", "-", "-", "F"]  # windows without labels neither break nor extend the streak
    assert alerter.observe("fraud", 3, 0, MINUTE, {METRIC_ACCURACY: 0.99}) == []  # replayed window: ignored
    assert alerter.observe("fraud", 3, 0, 4 * MINUTE, {}) == []
    assert alerter.firing() == [("fraud", 3, METRIC_ACCURACY)]
    with pytest.raises(InputError, match="before it starts"):
        alerter.observe("fraud", 3, 10, 5, {})


def test_state_is_kept_per_model_version_and_rule() -> None:
    alerter = Alerter(default_rules(latency_p99_ms=100.0))
    bad = {METRIC_LATENCY_P99: 500.0, METRIC_DEAD_LETTER_RATE: 0.5, METRIC_ACCURACY: 0.99}
    first = alerter.observe("fraud", 3, 0, MINUTE, bad)
    assert [(a.rule, a.state) for a in first] == [(METRIC_LATENCY_P99, "FIRING"), (METRIC_DEAD_LETTER_RATE, "FIRING")]
    assert [a.version for a in alerter.observe("fraud", 4, 0, MINUTE, bad)] == [4, 4]
    assert alerter.observe("census", 1, 0, MINUTE, {METRIC_LATENCY_P99: 50.0}) == []
    calm = alerter.observe("fraud", 3, MINUTE, 2 * MINUTE, {METRIC_LATENCY_P99: 90.0, METRIC_DEAD_LETTER_RATE: 0.0})
    assert [(a.rule, a.state) for a in calm] == [(METRIC_DEAD_LETTER_RATE, "RESOLVED")]  # 90 > 80: still firing
    assert ("fraud", 4, METRIC_LATENCY_P99) in alerter.firing()
    alerter.forget("fraud", 4)
    assert [k[:2] for k in alerter.firing()] == [("fraud", 3)]


def test_a_restarted_alerter_carries_on_without_firing_again() -> None:
    rule = AlertRule(METRIC_PSI_MAX, "above", 0.2, clear=0.1, for_windows=2)
    before = Alerter([rule])
    assert states(feed(before, METRIC_PSI_MAX, [0.3, 0.3, 0.3])) == ["-", "F", "-"]
    saved = orjson.loads(orjson.dumps(before.to_dict()))
    after = Alerter.from_dict(saved)
    assert after.rules == [rule]
    assert states(feed(after, METRIC_PSI_MAX, [0.3, 0.05], start=3)) == ["-", "R"]
    assert feed(after, METRIC_PSI_MAX, [0.3], start=1) == [[]]  # a window replayed after the restart
    renamed = Alerter.from_dict(saved, rules=[AlertRule(METRIC_PSI_MAX, "above", 0.5, name="psi-high")])
    assert renamed.firing() == []  # the saved state belonged to a rule that is gone
    with pytest.raises(InputError, match="format"):
        Alerter.from_dict({"format": 99})


@settings(max_examples=60, deadline=None)
@given(
    values=st.lists(st.one_of(st.none(), st.floats(0.0, 1.0)), max_size=40),
    for_windows=st.integers(1, 3),
    cut=st.integers(0, 40),
)
def test_alerts_alternate_and_survive_a_restart_anywhere(
    values: list[float | None], for_windows: int, cut: int
) -> None:
    rule = AlertRule("m", "above", 0.6, clear=0.4, for_windows=for_windows)
    straight = [a for batch in feed(Alerter([rule]), "m", values) for a in batch]
    assert [a.state for a in straight] == [
        AlertState.FIRING if i % 2 == 0 else AlertState.RESOLVED for i in range(len(straight))
    ]
    assert all(a.value > 0.6 if a.state == "FIRING" else a.value <= 0.4 for a in straight)
    first = Alerter([rule])
    head = [a for batch in feed(first, "m", values[:cut]) for a in batch]
    restarted = Alerter.from_dict(orjson.loads(orjson.dumps(first.to_dict())))
    tail = [a for batch in feed(restarted, "m", values[cut:], start=min(cut, len(values))) for a in batch]
    assert head + tail == straight


def test_rules_are_checked() -> None:
    with pytest.raises(ConfigError, match="clear"):
        AlertRule(METRIC_ACCURACY, "below", 0.9, clear=0.8)
    with pytest.raises(ConfigError, match="clear"):
        AlertRule(METRIC_PSI_MAX, "above", 0.2, clear=0.3)
    with pytest.raises(ConfigError, match="for_windows"):
        AlertRule(METRIC_PSI_MAX, "above", 0.2, for_windows=0)
    with pytest.raises(ConfigError, match="share a name"):
        Alerter([AlertRule("m", "above", 1.0), AlertRule("m", "above", 2.0)])
    Alerter([AlertRule("m", "above", 1.0), AlertRule("m", "above", 2.0, name="m-critical")])
    assert {r.metric for r in default_rules()} == {
        METRIC_PSI_MAX,
        METRIC_ACCURACY,
        METRIC_LATENCY_P99,
        METRIC_DEAD_LETTER_RATE,
    }
