"""Monitors as SQL: ``CREATE MONITOR`` and ``DROP MONITOR``, and the one way a monitor gets defined.

``CREATE MONITOR [IF NOT EXISTS] name WITH (MODEL='fraud', PREDICTIONS='fraud_scores', LABELS='fraud_labels',
KEY='Id', WITHIN='1 HOUR', ...)`` defines what ``streamml monitor start --detach`` defines, with the same
defaults and the same checks (both call :func:`define_monitor`): the label column and scores come from the
model's card, and the monitor's SQL must plan against the catalog before the definition is stored. Whoever
runs the deployment's monitors (``streamml monitor run``) starts it. ``DROP MONITOR [IF EXISTS] name`` removes
the definition; the metrics already published stay.

The SQL engine leaves these statements to a :class:`~streamml.runtime.session.Session` built with
``statements=MONITOR_STATEMENTS`` (``streamml sql``, ``streamml.sql``).
"""

from __future__ import annotations

import logging
from typing import Any

from streamml.config import Settings
from streamml.errors import InputError, SqlError, StreamMLError
from streamml.models.card import ModelCard
from streamml.monitor.alerts import default_rules
from streamml.monitor.spec import (
    MonitorSpec,
    find_monitor,
    parse_duration,
    plan_inputs,
    publish_monitor,
    read_monitors,
)
from streamml.runtime.session import Session, StatementHandler
from streamml.runtime.training import default_registry
from streamml.sql import SqlEngine, StatementResult
from streamml.sql import ast as sql_ast

log = logging.getLogger(__name__)

#: ``WITH`` properties of ``CREATE MONITOR``: name -> (keyword of :func:`define_monitor`, required)
PROPERTIES: dict[str, tuple[str, bool]] = {
    "MODEL": ("model", True),
    "PREDICTIONS": ("predictions", True),
    "LABELS": ("labels", True),
    "KEY": ("key", True),
    "LABEL_KEY": ("label_key", False),
    "LABEL": ("label", False),
    "PREDICTION": ("prediction", False),
    "SCORE": ("score", False),
    "POSITIVE": ("positive", False),
    "FEATURES": ("features", False),
    "WINDOW": ("window", False),
    "WITHIN": ("within", False),
    "GRACE": ("grace", False),
    "PSI": ("psi", False),
    "ACCURACY_FLOOR": ("accuracy_floor", False),
    "START": ("start", False),
    "METRICS_TOPIC": ("metrics_topic", False),
    "ALERTS_TOPIC": ("alerts_topic", False),
}


def monitor_card(settings: Settings, model: str) -> ModelCard | None:
    """The card of the version ``model`` resolves to, or None while the model is not registered yet."""
    try:
        return default_registry(settings).get(model).card
    except StreamMLError:
        return None


def define_monitor(
    settings: Settings,
    engine: SqlEngine,
    *,
    name: str,
    model: str,
    predictions: str,
    labels: str,
    key: str,
    label_key: str | None = None,
    label: str | None = None,
    prediction: str | None = None,
    score: str | None = None,
    positive: str | None = None,
    features: str | list[str] | None = None,
    window: str = "1 MINUTE",
    within: str = "1 HOUR",
    grace: str = "0 SECONDS",
    psi: float = 0.2,
    accuracy_floor: float = 0.8,
    start: str = "latest",
    metrics_topic: str | None = None,
    alerts_topic: str | None = None,
) -> MonitorSpec:
    """Build the monitor from these options and the model's card, check that its SQL plans over ``engine``'s
    catalog, and store the definition; returns it."""
    card = monitor_card(settings, model)
    label = label or (card.label if card is not None else None)
    if not label:
        raise InputError(f"model {model}'s card names no label", hint="name the label column (LABEL / --label-column)")
    if isinstance(features, str):
        features = [f.strip() for f in features.split(",") if f.strip()]
    topics = {k: v for k, v in (("metrics_topic", metrics_topic), ("alerts_topic", alerts_topic)) if v}
    spec = MonitorSpec.model_validate({
        "name": name, "model": model, "predictions": predictions, "labels": labels, "key": key,
        "label_key": label_key, "label": label, "prediction": prediction, "score": score, "positive": positive,
        "features": features or None, "window_ms": parse_duration(window), "within_ms": parse_duration(within),
        "grace_ms": parse_duration(grace), "start": start.lower(),
        "rules": [r.to_dict() for r in default_rules(psi=float(psi), accuracy_floor=float(accuracy_floor))],
        **topics,
    })  # fmt: skip
    plan_inputs(spec, engine, card)  # refuse what does not plan before storing it
    publish_monitor(settings, spec)
    return spec


def create_monitor(session: Session, statement: sql_ast.Statement, text: str, idempotent: bool) -> StatementResult:
    """``CREATE MONITOR``: an existing monitor of that name is an error, unless ``IF NOT EXISTS`` (or, applying
    a file again, the very same definition)."""
    assert isinstance(statement, sql_ast.CreateMonitor)
    unknown = sorted(set(statement.properties) - set(PROPERTIES))
    if unknown:
        raise _error(statement, text, f"unknown monitor property {unknown[0]}", f"known: {', '.join(PROPERTIES)}")
    missing = [p for p, (_, required) in PROPERTIES.items() if required and p not in statement.properties]
    if missing:
        example = "WITH (MODEL='fraud', PREDICTIONS='fraud_scores', LABELS='fraud_labels', KEY='Id')"
        raise _error(statement, text, f"CREATE MONITOR needs {', '.join(missing)}", f"e.g. {example}")
    options: dict[str, Any] = {PROPERTIES[p][0]: v for p, v in statement.properties.items() if v is not None}
    existing = find_monitor(read_monitors(session.settings), statement.name)
    if existing is not None and statement.if_not_exists:
        return StatementResult(statement, "TEXT", f"monitor {statement.name} already exists")
    if existing is not None and not idempotent:
        raise _error(statement, text, f"monitor '{statement.name}' already exists", f"DROP MONITOR {statement.name}")
    session.refresh()  # plan against the catalog as stored now
    try:
        name = existing.name if existing is not None else statement.name
        spec = define_monitor(session.settings, session.engine, name=name, **options)
    except StreamMLError as exc:  # an error in the monitor's own SQL is reported at this statement
        raise _error(statement, text, exc.message, exc.hint) from None
    except (TypeError, ValueError) as exc:
        raise _error(statement, text, f"invalid monitor property: {exc}", None) from None
    if existing is not None and existing != spec:  # applied again with a changed definition: the new one wins
        log.info("monitor %s redefined", spec.name)
    return StatementResult(
        statement, "CREATED", f"Monitor {spec.name} created: metrics to {spec.metrics_topic}, alerts to "
        f"{spec.alerts_topic} (streamml monitor run runs it)",
    )  # fmt: skip


def drop_monitor(session: Session, statement: sql_ast.Statement, text: str, idempotent: bool) -> StatementResult:
    """``DROP MONITOR``: removes the definition (its worker stops; published metrics stay)."""
    assert isinstance(statement, sql_ast.DropMonitor)
    existing = find_monitor(read_monitors(session.settings), statement.name)
    if existing is None:
        if statement.if_exists or idempotent:
            return StatementResult(statement, "TEXT", f"monitor {statement.name} does not exist")
        raise _error(statement, text, f"no monitor named '{statement.name}'", "streamml monitor list")
    publish_monitor(session.settings, None, existing.name)
    return StatementResult(statement, "DROPPED", f"Monitor {existing.name} dropped")


def _error(statement: sql_ast.Statement, text: str, message: str, hint: str | None) -> SqlError:
    return SqlError(message, line=statement.pos.line, column=statement.pos.column, statement=text, hint=hint)


#: the handlers a session needs to run monitor statements
MONITOR_STATEMENTS: dict[type[sql_ast.Statement], StatementHandler] = {
    sql_ast.CreateMonitor: create_monitor,
    sql_ast.DropMonitor: drop_monitor,
}
