"""The retraining loop: retrain a model when its monitor says so, score the candidate in shadow, promote it
only if it is better on the same labelled traffic.

A :class:`RetrainPolicy` names the model, the live monitor watching it, and what triggers a retraining:

- ``drift``: the live monitor's alert rule ``drift_psi_max`` is FIRING for the version in force (the latest
  alert of that rule and version on the monitor's alerts topic);
- ``accuracy``: the same for the ``accuracy`` rule;
- ``schedule``: every ``every_s`` seconds.

When triggered (and ``cooldown_s`` after the previous decision), :class:`RetrainingLoop`:

1. trains a *candidate* with :func:`~streamml.runtime.training.train_from_stream` on the source's records of
   the last ``train_window_s`` seconds (recipe, source, SQL, label and params default to the card of the
   version in force); it is registered, not promoted;
2. starts the *shadow*: a persistent query copied from the live scoring query (the one of the catalog whose
   sink is the monitor's predictions stream) with ``PREDICT`` pinned to the candidate
   (``PREDICT('model:N', ...)``), writing to a stream of its own, ``<predictions>_shadow_v<N>`` (never to the
   live output; a runner runs it like any query), and a shadow monitor ``<monitor>-shadow-v<N>``
   (``role="shadow"``, same labels, key, window and ``within``, no alert rules, from the earliest record),
   run by a :class:`~streamml.monitor.supervisor.MonitorSupervisor` inside the loop (``run_shadow=True``) or
   by whoever runs the deployment's monitors;
3. reads both monitors' metrics and :func:`compare` s the metric (``f1`` by default) over the windows both
   have, each side weighted by its ``evaluated`` rows, counting only windows that start after the candidate's
   training data ends (it is never judged on what it was trained on);
4. once ``min_windows`` windows and ``min_labelled`` rows are in: promotes the candidate (registry, then the
   control topic) if it beats the version in force by ``margin``, else rejects it (the version stays, with
   the reason); after ``max_shadow_s`` without enough evidence it is rejected too. Then the shadow query is
   terminated, its stream dropped (the topic stays) and the shadow monitor removed.

Every step is an event on the model control topic (``candidate``, ``shadow``, ``promote`` / ``reject``, each
with a ``reason`` and the two metric values in ``detail``) and, since that topic is compacted by key, also in
the registry's history of the version (``streamml models show MODEL`` prints it).
"""

from __future__ import annotations

import logging
import math
import re
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import orjson
from pydantic import BaseModel, ConfigDict, ValidationError

from streamml.config import Settings
from streamml.errors import ConfigError, InputError, StreamMLError
from streamml.kafka import Admin, BatchConsumer, client_config
from streamml.models.events import ModelEvent
from streamml.models.registry import DEFAULT_ALIAS, ModelRef, ModelVersion, Registry
from streamml.monitor.alerts import METRIC_ACCURACY, AlertState
from streamml.monitor.drift import METRIC_PSI_MAX
from streamml.monitor.spec import MonitorSpec, find_monitor, publish_monitor, read_monitors
from streamml.monitor.supervisor import MonitorSupervisor
from streamml.runtime.control import publish_events
from streamml.runtime.session import Session
from streamml.runtime.training import train_from_stream

log = logging.getLogger(__name__)

Metric = Literal["f1", "pr_auc", "roc_auc", "accuracy", "recall"]
#: the alert rule each alert trigger waits for
TRIGGER_RULES = {"drift": METRIC_PSI_MAX, "accuracy": METRIC_ACCURACY}
_PREDICT = re.compile(r"PREDICT\s*\(\s*'((?:[^']|'')*)'", re.IGNORECASE)
_AS_SELECT = re.compile(r"\bAS\s+SELECT\b", re.IGNORECASE)


class RetrainPolicy(BaseModel):
    """When to retrain ``model``, on what, and how a candidate must compare to be promoted."""

    model_config = ConfigDict(frozen=True)

    model: str
    #: the live monitor of the model (its predictions stream names the scoring query to shadow)
    monitor: str
    trigger: Literal["drift", "accuracy", "schedule"]
    every_s: float | None = None
    #: the alert rule a drift/accuracy trigger waits for (default: ``drift_psi_max`` / ``accuracy``)
    rule: str | None = None
    #: training: default the card of the version in force (recipe, lineage source and SQL, label, params)
    recipe: str | None = None
    source: str | None = None
    sql: str | None = None
    label: str | None = None
    params: dict[str, Any] | None = None
    #: train on the source's records of the last ``train_window_s`` seconds (None: all of them)
    train_window_s: float | None = None
    metric: Metric = "f1"
    margin: float = 0.01
    min_windows: int = 3
    min_labelled: int = 200
    cooldown_s: float = 3600.0
    max_shadow_s: float = 3600.0
    alias: str = DEFAULT_ALIAS
    seed: int = 0

    def model_post_init(self, context: Any, /) -> None:
        if self.trigger == "schedule" and not (self.every_s and self.every_s > 0):
            raise InputError("a schedule trigger needs every_s > 0", hint="e.g. --every '1 HOUR'")
        if self.min_windows < 1 or self.min_labelled < 0 or self.cooldown_s < 0 or self.max_shadow_s <= 0:
            raise InputError("min_windows must be >= 1, min_labelled and cooldown_s >= 0, max_shadow_s > 0")
        if self.train_window_s is not None and self.train_window_s <= 0:
            raise InputError("train_window_s must be positive")

    @property
    def alert_rule(self) -> str | None:
        return self.rule or TRIGGER_RULES.get(self.trigger)

    def to_json(self) -> bytes:
        return orjson.dumps(self.model_dump())

    @classmethod
    def from_json(cls, data: bytes | str) -> RetrainPolicy:
        try:
            return cls.model_validate_json(data)
        except ValidationError as exc:
            error = exc.errors()[0]
            raise ConfigError(f"invalid retraining policy: {error['msg']} at {error['loc']}") from None


# -- the decision (broker-free) ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Comparison:
    """The metric of both versions over their common windows, and what it decides."""

    metric: str
    current: float | None
    candidate: float | None
    windows: int
    labelled: int
    #: enough windows and labelled rows to decide
    decided: bool
    promote: bool
    reason: str

    def detail(self) -> dict[str, Any]:
        return {"metric": self.metric, "current": self.current, "candidate": self.candidate,
                "windows": self.windows, "labelled": self.labelled}  # fmt: skip


def compare(
    live: Mapping[int, Mapping[str, Any]],
    shadow: Mapping[int, Mapping[str, Any]],
    *,
    metric: str,
    margin: float,
    min_windows: int,
    min_labelled: int,
    since_ms: int | None = None,
) -> Comparison:
    """Compare metrics records by ``window_start_ms`` (``live``: the version in force, ``shadow``: the candidate).

    Only windows both sides have, with the metric and evaluated rows on both, starting at or after
    ``since_ms``, count; each side's value is its mean weighted by its ``evaluated`` rows. ``labelled`` is the
    smaller side's evaluated rows. Decided once ``min_windows`` and ``min_labelled`` are reached; promote
    when candidate >= current + margin.
    """
    common = [w for w in sorted(set(live) & set(shadow)) if since_ms is None or w >= since_ms]
    usable = [w for w in common if _usable(live[w], metric) and _usable(shadow[w], metric)]
    current, current_n = _weighted(live, usable, metric)
    candidate, candidate_n = _weighted(shadow, usable, metric)
    labelled = min(current_n, candidate_n)
    decided = len(usable) >= min_windows and labelled >= min_labelled
    if not decided:
        progress = f"{len(usable)} of {min_windows} windows, {labelled} of {min_labelled} labelled rows"
        return Comparison(metric, current, candidate, len(usable), labelled, False, False, progress)
    assert current is not None and candidate is not None
    better = candidate >= current + margin
    verdict = "at least" if better else "less than"
    reason = (f"{metric} {candidate:.4f} (candidate) vs {current:.4f} (in force): {verdict} the margin {margin:g}, "
              f"over {len(usable)} windows, {labelled} labelled rows")  # fmt: skip
    return Comparison(metric, current, candidate, len(usable), labelled, True, better, reason)


def _usable(record: Mapping[str, Any], metric: str) -> bool:
    value = record.get(metric)
    return isinstance(value, int | float) and math.isfinite(value) and int(record.get("evaluated") or 0) > 0


def _weighted(records: Mapping[int, Mapping[str, Any]], windows: list[int], metric: str) -> tuple[float | None, int]:
    weights = [int(records[w]["evaluated"]) for w in windows]
    total = sum(weights)
    if not total:
        return None, 0
    return sum(float(records[w][metric]) * n for w, n in zip(windows, weights, strict=True)) / total, total


def shadow_statement(live_sql: str, model: str, version: int, stream: str, topic: str, value_format: str) -> str:
    """The live ``CREATE STREAM ... AS SELECT`` re-targeted at ``stream``/``topic`` with ``model``'s
    ``PREDICT`` calls pinned to ``model:version``."""
    found = _AS_SELECT.search(live_sql)
    if found is None or not live_sql.lstrip().upper().startswith("CREATE"):
        raise ConfigError("the live scoring query is not a CREATE STREAM ... AS SELECT", hint=live_sql)

    def pin(match: re.Match[str]) -> str:
        ref = match.group(1).replace("''", "'")
        try:
            name = ModelRef.parse(ref).name
        except StreamMLError:
            return match.group(0)
        return f"PREDICT('{model}:{version}'" if name == model else match.group(0)

    select, pinned = _PREDICT.subn(pin, live_sql[found.start() + 2 :].strip().rstrip(";"))
    if pinned == 0 or f"'{model}:{version}'" not in select:
        raise ConfigError(f"the live scoring query does not call PREDICT('{model}', ...)", hint=live_sql)
    return f"CREATE STREAM {stream} WITH (KAFKA_TOPIC='{topic}', VALUE_FORMAT='{value_format}') AS {select};"


# -- the loop ----------------------------------------------------------------------------------------------


@dataclass
class Shadow:
    """A candidate being scored beside the version in force."""

    candidate: ModelVersion
    current: int
    stream: str
    query_id: str
    monitor: MonitorSpec
    started: float
    #: candidate's training data ends here (event time): windows before it are not compared
    since_ms: int | None
    live: dict[int, dict[str, Any]] = field(default_factory=dict)
    shadow: dict[int, dict[str, Any]] = field(default_factory=dict)
    comparison: Comparison | None = None


class RetrainingLoop:
    """Follows ``policy`` (see the module docstring): :meth:`step` does one bit of work, :meth:`run` loops."""

    def __init__(
        self,
        settings: Settings,
        policy: RetrainPolicy,
        *,
        registry: Registry | None = None,
        run_shadow: bool = True,
        on_event: Callable[[ModelEvent], None] | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.settings, self.policy = settings, policy
        self.registry = registry or Registry(settings.registry_root)
        self.on_event = on_event
        self.clock = clock
        self.session = Session(settings)
        monitor = find_monitor(read_monitors(settings), policy.monitor)
        if monitor is None:
            raise InputError(f"no monitor named {policy.monitor!r}", hint="streamml monitor list")
        self.monitor = monitor
        self.shadow: Shadow | None = None
        #: every decision so far: (candidate version, comparison)
        self.decisions: list[tuple[int, Comparison]] = []
        self.events: list[ModelEvent] = []
        self._last_start = clock()
        self._last_decision: float | None = None
        self._alerts: dict[tuple[int, str], dict[str, Any]] = {}
        config = client_config(settings)
        admin = Admin(config, timeout_s=settings.request_timeout_s)
        for topic in (self.monitor.metrics_topic, self.monitor.alerts_topic):  # as the monitor's worker makes them
            admin.create_topic(topic, partitions=1, if_not_exists=True)
        self._alert_reader = (
            BatchConsumer(config, [self.monitor.alerts_topic], start="earliest") if policy.alert_rule else None
        )
        self._metrics_reader: BatchConsumer | None = None
        self._shadow_names: set[str] = set()
        self._supervisor: MonitorSupervisor | None = None
        self._supervisor_stop = threading.Event()
        if run_shadow:
            self._supervisor = MonitorSupervisor(settings, only=self._shadow_names, refresh_s=0.5)
            threading.Thread(target=self._supervisor.run, args=(self._supervisor_stop,), name="shadow-monitors",
                             daemon=True).start()  # fmt: skip

    # -- stepping -------------------------------------------------------------------------------------------
    def run(self, stop: threading.Event, interval_s: float = 1.0) -> None:
        try:
            while not stop.is_set():
                try:
                    self.step()
                except StreamMLError as exc:
                    log.error("retraining %s: %s", self.policy.model, exc)
                stop.wait(interval_s)
        finally:
            self.close()

    def step(self) -> str | None:
        """Check the trigger, or the shadow's progress; returns the action taken (``shadow``, ``promote``,
        ``reject``) or None."""
        if self.shadow is None:
            reason = self.triggered()
            if reason is None:
                return None
            self.start_shadow(reason)
            return "shadow"
        return self._evaluate()

    def in_force(self) -> int:
        return self.registry.get(f"{self.policy.model}@{self.policy.alias}").version

    def triggered(self) -> str | None:
        """Why a retraining is due now, or None."""
        now = self.clock()
        if self._last_decision is not None and now - self._last_decision < self.policy.cooldown_s:
            return None
        if self.policy.trigger == "schedule":
            assert self.policy.every_s is not None
            due = now - self._last_start >= self.policy.every_s
            return f"scheduled every {self.policy.every_s:g} s" if due else None
        assert self._alert_reader is not None
        while len(batch := self._alert_reader.poll_batch(5000, 0.1)):
            for value in batch.values:
                alert = _json(value)
                if alert is not None and alert.get("model") == self.policy.model and "rule" in alert:
                    self._alerts[(_int(alert.get("version")), str(alert["rule"]))] = alert
        latest = self._alerts.get((self.in_force(), str(self.policy.alert_rule)))
        if latest is None or latest.get("state") != AlertState.FIRING.value:
            return None
        return f"alert {latest['rule']} FIRING: {latest.get('message', '')}".rstrip(": ")

    def start_shadow(self, reason: str) -> Shadow:
        """Train and register the candidate, start its shadow query and monitor."""
        self._last_start = self.clock()
        current = self.registry.get(f"{self.policy.model}@{self.policy.alias}")
        candidate = self._train(current)
        lineage = candidate.card.lineage
        detail = {"source": lineage.source, "rows": lineage.rows, "in_force": current.version}
        self._record(ModelEvent(action="candidate", model=self.policy.model, version=candidate.version,
                                reason=f"retrained: {reason}", detail=detail))  # fmt: skip
        stream, query_id = self._shadow_query(candidate.version)
        spec = self.monitor.model_copy(update={
            "name": _shadow_name(self.monitor.name, candidate.version), "predictions": stream, "role": "shadow",
            "start": "earliest", "rules": [],
        })  # fmt: skip
        MonitorSpec.model_validate(spec.model_dump())  # the copy passes the checks a new definition does
        publish_monitor(self.settings, spec)
        self._shadow_names.add(spec.name)
        end = candidate.card.lineage.time_end
        self.shadow = Shadow(candidate, current.version, stream, query_id, spec, self.clock(),
                             int(end.timestamp() * 1000) + 1 if end is not None else None)  # fmt: skip
        self._metrics_reader = BatchConsumer(client_config(self.settings), [self.monitor.metrics_topic],
                                             start="earliest")  # fmt: skip
        self._record(ModelEvent(action="shadow", model=self.policy.model, version=candidate.version,
                                reason=f"scored in shadow by {query_id} into {stream}, watched by monitor {spec.name}",
                                detail={"stream": stream, "query": query_id, "monitor": spec.name}))  # fmt: skip
        return self.shadow

    def _train(self, current: ModelVersion) -> ModelVersion:
        card, p = current.card, self.policy
        source, recipe, label = p.source or card.lineage.source, p.recipe or card.recipe, p.label or card.label
        if not source or not recipe:
            raise ConfigError(f"{current.ref}'s card names no training source or recipe",
                              hint="give the policy a source and a recipe")  # fmt: skip
        start = None if p.train_window_s is None else int((self.clock() - p.train_window_s) * 1000)
        params = p.params if p.params is not None else _own_params(card.params)
        return train_from_stream(self.settings, recipe, source, label=label, name=p.model, params=params,
                                 sql=p.sql or card.lineage.sql, from_time=start, seed=p.seed,
                                 registry=self.registry, cache=False)  # fmt: skip

    def _shadow_query(self, version: int) -> tuple[str, str]:
        self.session.refresh()
        engine = self.session.engine
        live = self.monitor.predictions.upper()
        found = [(q, plan) for q, plan in engine.queries.items() if plan.sink and plan.sink.name.upper() == live]
        if not found:
            raise ConfigError(f"no persistent query writes {self.monitor.predictions}",
                              hint="the live monitor's predictions must be the output of a PREDICT query")  # fmt: skip
        _, plan = found[0]
        assert plan.sink is not None
        stream = f"{self.monitor.predictions}_shadow_v{version}"
        statement = shadow_statement(plan.text, self.policy.model, version, stream,
                                     f"{plan.sink.topic}_shadow_v{version}", plan.sink.value_format)  # fmt: skip
        outcome = self.session.execute(statement)[0]
        if outcome.result.query_id is None:
            raise ConfigError(f"the shadow query did not start: {outcome.message}", hint=statement)
        return stream, outcome.result.query_id

    def _evaluate(self) -> str | None:
        shadow, p = self.shadow, self.policy
        assert shadow is not None and self._metrics_reader is not None
        while len(batch := self._metrics_reader.poll_batch(5000, 0.1)):
            for value in batch.values:
                record = _json(value)
                if record is None or "window_start_ms" not in record:
                    continue
                monitor, version = record.get("monitor"), _int(record.get("version"))
                if monitor == self.monitor.name and version == shadow.current:
                    shadow.live[int(record["window_start_ms"])] = record
                elif monitor == shadow.monitor.name and version == shadow.candidate.version:
                    shadow.shadow[int(record["window_start_ms"])] = record
        result = compare(shadow.live, shadow.shadow, metric=p.metric, margin=p.margin, min_windows=p.min_windows,
                         min_labelled=p.min_labelled, since_ms=shadow.since_ms)  # fmt: skip
        shadow.comparison = result
        if not result.decided:
            if self.clock() - shadow.started < p.max_shadow_s:
                return None
            why = f"not enough evidence after {p.max_shadow_s:g} s: {result.reason}"
            result = Comparison(result.metric, result.current, result.candidate, result.windows, result.labelled,
                                True, False, why)  # fmt: skip
        return self._decide(shadow, result)

    def _decide(self, shadow: Shadow, result: Comparison) -> str:
        version = shadow.candidate.version
        if result.promote:
            event = self.registry.promote(self.policy.model, version, self.policy.alias, reason=result.reason,
                                          detail=result.detail())  # fmt: skip
            publish_events(self.settings, [event])
            self.events.append(event)
            if self.on_event is not None:
                self.on_event(event)
        else:
            self._record(ModelEvent(action="reject", model=self.policy.model, version=version,
                                    reason=result.reason, detail=result.detail()))  # fmt: skip
        log.info("retraining %s: %s v%d: %s", self.policy.model, "promoted" if result.promote else "rejected",
                 version, result.reason)  # fmt: skip
        self.decisions.append((version, result))
        self.retire()
        self._last_decision = self.clock()
        return "promote" if result.promote else "reject"

    def retire(self) -> None:
        """Terminate the shadow query, drop its stream (the topic stays), remove the shadow monitor."""
        shadow, self.shadow = self.shadow, None
        if self._metrics_reader is not None:
            self._metrics_reader.close()
            self._metrics_reader = None
        if shadow is None:
            return
        publish_monitor(self.settings, None, shadow.monitor.name)
        self._shadow_names.discard(shadow.monitor.name)
        self.session.refresh()
        self.session.execute(f"TERMINATE {shadow.query_id}; DROP STREAM {shadow.stream};")

    def _record(self, event: ModelEvent) -> None:
        """One step: in the registry's history of the version, then on the control topic."""
        self.registry.annotate(event.model, event)
        publish_events(self.settings, [event])
        self.events.append(event)
        if self.on_event is not None:
            self.on_event(event)

    def close(self) -> None:
        """Stop the shadow monitors and readers (a shadow in progress stays; :meth:`retire` ends it)."""
        self._supervisor_stop.set()
        if self._supervisor is not None:
            self._supervisor.stop()
        for reader in (self._alert_reader, self._metrics_reader):
            if reader is not None:
                reader.close()
        self._alert_reader = self._metrics_reader = None


def _shadow_name(monitor: str, version: int) -> str:
    return f"{monitor}-shadow-v{version}"


def _own_params(params: Mapping[str, Any]) -> dict[str, Any]:
    """A card's params minus what the recipe derived from the data (the positive label)."""
    return {k: v for k, v in params.items() if k != "positive_label" or v is not None}


def _json(value: bytes | None) -> dict[str, Any] | None:
    if not value:
        return None
    try:
        data = orjson.loads(value)
    except orjson.JSONDecodeError:
        return None
    return data if isinstance(data, dict) else None


def _int(value: Any) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        return -1
