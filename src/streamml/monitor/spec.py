"""What a monitor watches and how: the definition stored on the deployment's monitors topic.

A monitor names a model, the stream of its predictions (the output of a ``PREDICT`` query) and a stream of
labels, the key that joins them, and the SQL expressions that pick the prediction, the score and the model
version out of a prediction record. Expressions the user leaves out are derived from the model card and the
stream's schema (the ``PREDICT`` struct column: ``p->IS_ANOMALY`` / ``p->SCORE`` for an anomaly model,
``p->LABEL`` and the positive class's probability for a classifier). :func:`plan_inputs` turns a definition
into two ordinary SQL projections over the catalog, so the monitor reads its inputs the way every query
does (``EXPLAIN`` prints them).

Definitions are published to a compacted topic (:func:`publish_monitor`; a tombstone removes one) and read
back by every monitor worker (:func:`read_monitors`).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any, Literal

import orjson
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from streamml.config import Settings
from streamml.errors import ConfigError, InputError
from streamml.kafka import Admin, Producer, client_config
from streamml.kafka.compacted import CompactedReader
from streamml.models.card import ModelCard
from streamml.monitor.alerts import AlertRule, default_rules
from streamml.runtime.topics import MONITOR_ALERTS_TOPIC, MONITOR_METRICS_TOPIC, ensure_monitors_topic, monitors_topic
from streamml.sql import QueryPlan, Source, SqlEngine

_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_-]{0,63}$")
_DURATION = re.compile(r"^\s*(\d+)\s*([A-Za-z]+)\s*$")
_UNITS_MS = {
    "MILLISECOND": 1, "MILLISECONDS": 1, "MS": 1, "SECOND": 1000, "SECONDS": 1000, "S": 1000,
    "MINUTE": 60_000, "MINUTES": 60_000, "M": 60_000, "HOUR": 3_600_000, "HOURS": 3_600_000, "H": 3_600_000,
    "DAY": 86_400_000, "DAYS": 86_400_000, "D": 86_400_000,
}  # fmt: skip


def parse_duration(text: str) -> int:
    """``"30 SECONDS"``, ``"1 HOUR"``, ``"500 ms"`` -> milliseconds (the units ksqlDB's ``WITHIN`` takes)."""
    match = _DURATION.match(text)
    unit = match.group(2).upper() if match else ""
    if not match or unit not in _UNITS_MS:
        raise InputError(f"not a duration: {text!r}", hint="write it as ksqlDB does, e.g. '30 SECONDS' or '1 HOUR'")
    return int(match.group(1)) * _UNITS_MS[unit]


class MonitorSpec(BaseModel):
    """One monitor: model ``model``'s predictions on stream ``predictions`` joined with stream ``labels``."""

    model_config = ConfigDict(frozen=True)

    name: str
    model: str
    predictions: str
    labels: str
    #: the join key: a column of the predictions stream, and of the labels stream unless ``label_key`` is set
    key: str
    label_key: str | None = None
    #: the label column of the labels stream
    label: str
    #: SQL expressions over a prediction record (derived from the card and schema when None)
    prediction: str | None = None
    score: str | None = None
    version: str | None = None
    #: the positive class, compared as a category key (``"1"``, ``"true"``, ``">50K"``)
    positive: str | None = None
    #: features to watch for drift (default: the card's features that are columns of the predictions)
    features: list[str] | None = None
    window_ms: int = 60_000
    within_ms: int = 3_600_000
    grace_ms: int = 0
    rules: list[dict[str, Any]] = Field(default_factory=lambda: [r.to_dict() for r in default_rules()])
    #: where a new monitor starts reading: new records only (``latest``, as ksqlDB's queries) or everything
    start: Literal["earliest", "latest"] = "latest"
    #: ``shadow``: the predictions of a candidate scored next to the version in force
    role: Literal["live", "shadow"] = "live"
    metrics_topic: str = MONITOR_METRICS_TOPIC
    alerts_topic: str = MONITOR_ALERTS_TOPIC

    def model_post_init(self, context: Any, /) -> None:
        if not _NAME.match(self.name):
            raise InputError(f"monitor name {self.name!r} is not valid", hint="letters, digits, '_' and '-'")
        if self.window_ms <= 0 or self.within_ms < 0 or self.grace_ms < 0:
            raise InputError("a monitor's window must be positive, its within and grace not negative")
        self.alert_rules()

    def alert_rules(self) -> list[AlertRule]:
        try:
            return [AlertRule.from_dict(r) for r in self.rules]
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"monitor {self.name}: invalid alert rule: {exc}") from exc

    def to_json(self) -> bytes:
        return orjson.dumps(self.model_dump())

    @classmethod
    def from_json(cls, data: bytes | str) -> MonitorSpec:
        try:
            return cls.model_validate_json(data)
        except ValidationError as exc:
            raise ConfigError(
                f"invalid monitor definition: {exc.errors()[0]['msg']} at {exc.errors()[0]['loc']}"
            ) from None


class MonitorInputs(BaseModel):
    """The two projections a monitor runs on its input records, and what their columns mean."""

    model_config = ConfigDict(frozen=True, arbitrary_types_allowed=True)

    predictions_sql: str
    labels_sql: str
    predictions_plan: QueryPlan
    labels_plan: QueryPlan
    predictions_source: Source
    labels_source: Source
    #: feature names in the order of the ``FEATURE_<i>`` columns
    features: list[str]

    def explain(self) -> str:
        """Both projections and their plans, as ``EXPLAIN`` prints them."""
        return "\n\n".join(
            [f"-- predictions\n{self.predictions_sql}\n{self.predictions_plan.explain()}",
             f"-- labels\n{self.labels_sql}\n{self.labels_plan.explain()}"]
        )  # fmt: skip


def plan_inputs(spec: MonitorSpec, engine: SqlEngine, card: ModelCard | None) -> MonitorInputs:
    """Plan ``spec``'s projections against ``engine``'s catalog; clear errors for unknown streams/columns."""
    predictions = _source(engine, spec.predictions, "predictions")
    labels = _source(engine, spec.labels, "labels")
    columns = {c.name.upper(): c for c in predictions.columns}
    struct = _predict_column(predictions) if None in (spec.prediction, spec.score, spec.version) else None
    prediction = spec.prediction or _default_prediction(struct, card, spec.predictions)
    score = spec.score or _default_score(struct, card)
    version = spec.version or (f"{struct}->VERSION" if struct else "CAST(NULL AS INTEGER)")
    wanted = spec.features if spec.features is not None else list(card.features if card else [])
    features = [f for f in wanted if f.upper() in columns]
    if spec.features is not None and len(features) < len(wanted):
        missing = sorted(set(wanted) - set(features))
        raise InputError(f"stream {spec.predictions} has no column(s) {', '.join(missing)} to watch for drift")
    feature_sql = "".join(f", `{columns[f.upper()].name}` AS FEATURE_{i}" for i, f in enumerate(features))
    predictions_sql = (
        f"SELECT {spec.key} AS KEY, {version} AS VERSION, {prediction} AS PREDICTION, "
        f"CAST({score} AS DOUBLE) AS SCORE, ROWTIME AS TS{feature_sql} FROM {spec.predictions} EMIT CHANGES;"
    )
    labels_sql = (
        f"SELECT {spec.label_key or spec.key} AS KEY, {spec.label} AS LABEL, ROWTIME AS TS "
        f"FROM {spec.labels} EMIT CHANGES;"
    )
    return MonitorInputs(
        predictions_sql=predictions_sql,
        labels_sql=labels_sql,
        predictions_plan=_plan(engine, predictions_sql, "predictions", spec.name),
        labels_plan=_plan(engine, labels_sql, "labels", spec.name),
        predictions_source=predictions,
        labels_source=labels,
        features=features,
    )


def _source(engine: SqlEngine, name: str, what: str) -> Source:
    try:
        return engine.catalog.get(name)
    except Exception as exc:
        raise InputError(
            f"the {what} stream {name!r} is not in the catalog",
            hint=f"create it first (CREATE STREAM {name} ... WITH (KAFKA_TOPIC=..., VALUE_FORMAT=...))",
        ) from exc


def _plan(engine: SqlEngine, sql: str, what: str, name: str) -> QueryPlan:
    try:
        return engine.plan(sql)
    except Exception as exc:
        raise InputError(f"monitor {name}: the {what} projection does not plan: {exc}", hint=sql) from exc


def _predict_column(source: Source) -> str | None:
    """The column holding ``PREDICT``'s struct: a STRUCT with ``MODEL`` and ``VERSION`` fields."""
    for column in source.columns:
        fields = {n.upper() for n, _ in column.type.fields} if column.type.name == "STRUCT" else set()
        if {"MODEL", "VERSION"} <= fields:
            return column.name
    return None


def _default_prediction(struct: str | None, card: ModelCard | None, stream: str) -> str:
    if struct is None or card is None:
        raise InputError(
            f"stream {stream} has no PREDICT column the monitor recognises",
            hint="name the prediction with --prediction (a SQL expression such as p->IS_ANOMALY)",
        )
    field = {"anomaly": "IS_ANOMALY", "classifier": "LABEL", "regression": "PREDICTION"}.get(card.output.kind)
    if field is None:
        raise InputError(f"model {card.name} has raw outputs", hint="name the prediction with --prediction")
    return f"{struct}->{field}"


def _default_score(struct: str | None, card: ModelCard | None) -> str:
    if struct is None or card is None:
        return "CAST(NULL AS DOUBLE)"
    if card.output.kind == "anomaly":
        return f"{struct}->SCORE"
    classes, positive = card.output.classes or [], card.output.positive_label
    if card.output.kind == "classifier" and len(classes) == 2:
        index = classes.index(positive) if positive in classes else 1
        return f"{struct}->PROBABILITIES[{index + 1}]"
    return "CAST(NULL AS DOUBLE)"


# -- the definitions topic ---------------------------------------------------------------------------------


def publish_monitor(settings: Settings, spec: MonitorSpec | None, name: str | None = None) -> None:
    """Store ``spec`` (or, with ``spec=None``, remove monitor ``name``) on the monitors topic."""
    key = spec.name if spec is not None else name
    if not key:
        raise ConfigError("publish_monitor needs a spec or a name")
    config = client_config(settings)
    topic = ensure_monitors_topic(Admin(config, timeout_s=settings.request_timeout_s), settings)
    with Producer(config) as producer:
        producer.produce_batch(topic, [spec.to_json() if spec is not None else None], [key.encode()])


def read_monitors(settings: Settings, timeout_s: float = 30.0) -> dict[str, MonitorSpec]:
    """Every monitor defined in the deployment, by name (a definition that no longer parses is skipped)."""
    config = client_config(settings)
    specs: dict[str, MonitorSpec] = {}
    with CompactedReader(config, monitors_topic(settings.service_id), missing_ok=True) as reader:
        for key, value in reader.catch_up(timeout_s).items():
            try:
                spec = MonitorSpec.from_json(value)
            except ConfigError:
                continue
            specs[(key or b"").decode()] = spec
    return specs


def find_monitor(monitors: Mapping[str, MonitorSpec], name: str) -> MonitorSpec | None:
    """The monitor called ``name``: exactly, else ignoring case (SQL upper-cases names it does not quote)."""
    return monitors.get(name) or next((m for n, m in monitors.items() if n.upper() == name.upper()), None)
