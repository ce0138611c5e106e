"""Alerts on window metrics, with hysteresis: one FIRING when a metric goes bad, one RESOLVED when it recovers.

An :class:`AlertRule` watches one metric of a window (``accuracy``, ``drift_psi_max``, ``latency_p99_ms``,
``dead_letter_rate``, ...). An :class:`Alerter` keeps, per (model, version, rule), whether the rule is
firing and how many consecutive windows breached it; :meth:`Alerter.observe` returns an :class:`Alert`
only on a change of state, so a metric that stays bad raises one alert, not one per window. The state is
plain data (:meth:`Alerter.to_dict` / :meth:`Alerter.from_dict`), so a restarted monitor carries on without
firing again, and a window it has seen already (an end not after the last one observed) changes nothing.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from enum import StrEnum
from typing import Any, Literal

import orjson

from streamml.errors import ConfigError, InputError
from streamml.monitor.drift import METRIC_PSI_MAX, PSI_THRESHOLD

__all__ = [
    "METRIC_ACCURACY",
    "METRIC_DEAD_LETTER_RATE",
    "METRIC_LATENCY_P99",
    "Alert",
    "AlertRule",
    "AlertState",
    "Alerter",
    "default_rules",
]

METRIC_ACCURACY = "accuracy"
#: as the query metrics name it in their snapshot
METRIC_LATENCY_P99 = "latency_p99_ms"
#: dead letters / records in, per window
METRIC_DEAD_LETTER_RATE = "dead_letter_rate"

_STATE_FORMAT = 1


class AlertState(StrEnum):
    """What an alert announces."""

    FIRING = "FIRING"
    RESOLVED = "RESOLVED"


@dataclass(frozen=True)
class AlertRule:
    """Fire when ``metric`` is ``comparison`` ``threshold`` for ``for_windows`` consecutive windows.

    It resolves at the first window past ``clear`` (default: ``threshold``): at or below it for ``"above"``,
    at or above it for ``"below"``. Between the two a firing rule stays firing. ``name`` (default: the
    metric) tells rules on the same metric apart.
    """

    metric: str
    comparison: Literal["above", "below"]
    threshold: float
    clear: float | None = None
    for_windows: int = 1
    name: str = ""

    def __post_init__(self) -> None:
        if self.comparison not in ("above", "below"):
            raise ConfigError(
                f"alert rule '{self.key}': comparison must be 'above' or 'below', not {self.comparison!r}"
            )
        if self.for_windows < 1:
            raise ConfigError(f"alert rule '{self.key}': for_windows must be at least 1, got {self.for_windows}")
        if not math.isfinite(self.threshold) or not math.isfinite(self.clear_at):
            raise ConfigError(f"alert rule '{self.key}': threshold and clear must be finite numbers")
        wrong_side = self.clear_at > self.threshold if self.comparison == "above" else self.clear_at < self.threshold
        if wrong_side:
            side = "at most" if self.comparison == "above" else "at least"
            raise ConfigError(
                f"alert rule '{self.key}': clear {self.clear_at:g} must be {side} the threshold {self.threshold:g}"
            )

    @property
    def key(self) -> str:
        """The rule's name, or its metric when unnamed."""
        return self.name or self.metric

    @property
    def clear_at(self) -> float:
        """The value the metric must pass back to resolve."""
        return self.threshold if self.clear is None else self.clear

    def breached(self, value: float) -> bool:
        """Is ``value`` past the threshold?"""
        return value > self.threshold if self.comparison == "above" else value < self.threshold

    def cleared(self, value: float) -> bool:
        """Is ``value`` back past the clear threshold?"""
        return value <= self.clear_at if self.comparison == "above" else value >= self.clear_at

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready view."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> AlertRule:
        """The rule :meth:`to_dict` described."""
        return cls(**dict(data))


def default_rules(
    *,
    psi: float = PSI_THRESHOLD,
    accuracy_floor: float = 0.8,
    latency_p99_ms: float = 1000.0,
    dead_letter_rate: float = 0.01,
) -> list[AlertRule]:
    """Drift (largest feature PSI), accuracy floor, p99 latency ceiling, dead-letter rate ceiling.

    Each clears a little inside its threshold so a metric hovering at the line does not flap: PSI at half
    the threshold, accuracy 0.02 above the floor, latency at 80 % of the ceiling, dead letters at half.
    """
    return [
        AlertRule(METRIC_PSI_MAX, "above", psi, clear=psi / 2),
        AlertRule(METRIC_ACCURACY, "below", accuracy_floor, clear=min(accuracy_floor + 0.02, 1.0)),
        AlertRule(METRIC_LATENCY_P99, "above", latency_p99_ms, clear=latency_p99_ms * 0.8),
        AlertRule(METRIC_DEAD_LETTER_RATE, "above", dead_letter_rate, clear=dead_letter_rate / 2),
    ]


@dataclass(frozen=True)
class Alert:
    """A change of state of one rule for one model version, at the end of one window."""

    model: str
    version: int | str
    window_start_ms: int
    window_end_ms: int
    rule: str
    metric: str
    value: float
    #: the threshold crossed: the rule's threshold when firing, its clear threshold when resolved
    threshold: float
    state: AlertState
    message: str

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready view."""
        return {**asdict(self), "state": self.state.value}

    def to_json(self) -> bytes:
        """The alert as a JSON object, for a Kafka record value."""
        return orjson.dumps(self.to_dict())


@dataclass
class _RuleState:
    firing: bool = False
    #: consecutive breaching windows (while not firing)
    streak: int = 0
    last_end_ms: int | None = None
    #: when the current firing began (the window end of the FIRING alert)
    since_ms: int | None = None


@dataclass
class Alerter:
    """Evaluates rules window by window; the state per (model, version, rule) is the only memory."""

    rules: Sequence[AlertRule] = field(default_factory=default_rules)
    _states: dict[tuple[str, int | str, str], _RuleState] = field(default_factory=dict, init=False, repr=False)

    def __post_init__(self) -> None:
        self.rules = list(self.rules)
        keys = [r.key for r in self.rules]
        duplicates = sorted({k for k in keys if keys.count(k) > 1})
        if duplicates:
            raise ConfigError(f"alert rules share a name: {', '.join(duplicates)}", hint="give each rule a name=")

    def observe(
        self,
        model: str,
        version: int | str,
        window_start_ms: int,
        window_end_ms: int,
        values: Mapping[str, float | None],
    ) -> list[Alert]:
        """The alerts this window raises, in rule order; empty while nothing changes.

        A metric that is missing, None or NaN leaves its rule as it was (no labels in the window says
        nothing about accuracy). A window ending no later than the last one seen for a rule is ignored.
        """
        if window_end_ms < window_start_ms:
            raise InputError(f"window ends before it starts: {window_start_ms} > {window_end_ms}")
        alerts: list[Alert] = []
        for rule in self.rules:
            raw = values.get(rule.metric)
            if raw is None or not math.isfinite(float(raw)):
                continue
            value = float(raw)
            state = self._states.setdefault((model, version, rule.key), _RuleState())
            if state.last_end_ms is not None and window_end_ms <= state.last_end_ms:
                continue
            state.last_end_ms = window_end_ms
            if state.firing:
                if rule.cleared(value):
                    state.firing, state.streak, state.since_ms = False, 0, None
                    alerts.append(self._alert(rule, model, version, window_start_ms, window_end_ms, value, False))
                continue
            state.streak = state.streak + 1 if rule.breached(value) else 0
            if state.streak >= rule.for_windows:
                state.firing, state.streak, state.since_ms = True, 0, window_end_ms
                alerts.append(self._alert(rule, model, version, window_start_ms, window_end_ms, value, True))
        return alerts

    def firing(self) -> list[tuple[str, int | str, str]]:
        """(model, version, rule) of every rule firing now."""
        return sorted((k for k, s in self._states.items() if s.firing), key=str)

    def forget(self, model: str, version: int | str) -> None:
        """Drop the state of a model version that no longer serves (nothing is announced)."""
        for key in [k for k in self._states if k[:2] == (model, version)]:
            del self._states[key]

    def to_dict(self) -> dict[str, Any]:
        """The rules and the state, JSON-ready."""
        return {
            "format": _STATE_FORMAT,
            "rules": [r.to_dict() for r in self.rules],
            "states": [
                {"model": m, "version": v, "rule": r, **asdict(s)}
                for (m, v, r), s in self._states.items()
                if s.firing or s.streak or s.last_end_ms is not None
            ],
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], rules: Iterable[AlertRule] | None = None) -> Alerter:
        """An alerter that carries on from :meth:`to_dict`'s output; ``rules`` replaces the saved rules
        (the state of a rule no longer among them is dropped, a new rule starts fresh)."""
        if data.get("format") != _STATE_FORMAT:
            raise InputError(f"unknown alert state format {data.get('format')!r}, expected {_STATE_FORMAT}")
        chosen = list(rules) if rules is not None else [AlertRule.from_dict(r) for r in data.get("rules", [])]
        alerter = cls(chosen)
        known = {r.key for r in chosen}
        for entry in data.get("states", []):
            if entry["rule"] in known:
                alerter._states[(entry["model"], entry["version"], entry["rule"])] = _RuleState(
                    firing=bool(entry["firing"]),
                    streak=int(entry["streak"]),
                    last_end_ms=entry.get("last_end_ms"),
                    since_ms=entry.get("since_ms"),
                )
        return alerter

    @staticmethod
    def _alert(
        rule: AlertRule, model: str, version: int | str, start_ms: int, end_ms: int, value: float, firing: bool
    ) -> Alert:
        if firing:
            threshold = rule.threshold
            windows = f" for {rule.for_windows} windows" if rule.for_windows > 1 else ""
            text = f"{rule.metric} {value:.4g} {rule.comparison} {threshold:g}{windows}"
        else:
            threshold = rule.clear_at
            back = "below" if rule.comparison == "above" else "above"
            text = f"{rule.metric} {value:.4g} back {back} {threshold:g}"
            text = text if value != threshold else f"{rule.metric} {value:.4g} back at {threshold:g}"
        state = AlertState.FIRING if firing else AlertState.RESOLVED
        message = f"{state.value} {model} v{version}: {text} (window {start_ms}..{end_ms} ms)"
        return Alert(model, version, start_ms, end_ms, rule.key, rule.metric, value, threshold, state, message)
