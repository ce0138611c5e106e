"""Train a model from the history of a stream or topic and register it, with its lineage on the card.

The training table is read through the same SQL plan production runs (:func:`read_history`), so features
are computed identically at training and at scoring time::

    version = train_from_stream(settings, "autoencoder", "transactions", label="Class", name="fraud",
                                sql="SELECT V1, V2, Amount, Class FROM transactions")      # doctest: +SKIP
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

import pyarrow as pa

from streamml.config import Settings, load_settings
from streamml.errors import ModelError
from streamml.models.registry import ModelVersion, Registry
from streamml.runtime.catalog_store import catalog_engine
from streamml.runtime.history import Bounds, History, Progress, parse_time, read_history, why_empty
from streamml.sql import SqlEngine

if TYPE_CHECKING:
    from streamml.models.recipes import Recipe

log = logging.getLogger(__name__)

#: Recipe parameters that name columns (matched case-insensitively against the query's output).
_COLUMN_PARAMS = ("features", "exclude", "time_column", "key_column")


def default_registry(settings: Settings) -> Registry:
    """The configured registry (``Settings.registry_url``, default ``<home>/registry``)."""
    return Registry(settings.registry_root)


def train_from_stream(
    settings: Settings | None,
    recipe: str | Recipe,
    source: str,
    *,
    label: str | None,
    name: str,
    params: Mapping[str, Any] | None = None,
    sql: str | None = None,
    from_offset: int | None = None,
    from_time: str | int | None = None,
    to_offset: int | None = None,
    to_time: str | int | None = None,
    seed: int = 0,
    registry: Registry | None = None,
    engine: SqlEngine | None = None,
    cache: bool = True,
    description: str | None = None,
    threads: int | None = None,
    on_read: Progress | None = None,
    on_history: Callable[[History], None] | None = None,
) -> ModelVersion:
    """Read ``source`` through ``sql``, train ``recipe`` on the rows and register version ``name``.

    ``source`` is a stream of the catalog or a topic of JSON objects. Bounds are offsets (every partition)
    or times (epoch ms or ISO-8601); the end is exclusive and defaults to the end as of the call. Column
    names in ``label`` and in column-valued params match the query's output case-insensitively.
    Returns the registered :class:`~streamml.models.registry.ModelVersion`; its card's lineage names the
    source, per-partition offsets, time range, SQL text and value schema. ``settings`` defaults to
    :func:`~streamml.config.load_settings` (environment and config file); ``threads`` caps the training
    threads (None: the libraries' defaults).
    """
    if settings is None:
        settings = load_settings()
    from streamml.models.training import train_table  # loads scikit-learn: only when training

    bounds = Bounds(
        from_offset=from_offset,
        from_time_ms=None if from_time is None else parse_time(from_time),
        to_offset=to_offset,
        to_time_ms=None if to_time is None else parse_time(to_time),
    )
    if engine is None:  # the stored catalog, planned with the functions the runner has (PREDICT)
        engine = catalog_engine(settings)
    history = read_history(settings, source, sql=sql, bounds=bounds, engine=engine, cache=cache, progress=on_read)
    if on_history is not None:
        on_history(history)
    table = history.table
    if table.num_rows == 0:
        raise _no_rows(source, history, bounds)
    label = _column(table, label, "label") if label is not None else None
    resolved = _resolve_columns(table, dict(params or {}))
    return train_table(
        recipe,
        table,
        label,
        resolved,
        name=name,
        registry=registry or default_registry(settings),
        lineage=history.lineage,
        seed=seed,
        description=description,
        threads=threads,
    )


def _column(table: pa.Table, wanted: str, what: str) -> str:
    """The column of ``table`` called ``wanted``: exact match, else the one matching case-insensitively."""
    if wanted in table.column_names:
        return wanted
    matches = [c for c in table.column_names if c.upper() == wanted.upper()]
    if len(matches) == 1:
        return matches[0]
    raise ModelError(
        f"{what} column '{wanted}' is not in the query's output", hint=f"columns: {', '.join(table.column_names)}"
    )


def _resolve_columns(table: pa.Table, params: dict[str, Any]) -> dict[str, Any]:
    for key in _COLUMN_PARAMS:
        value = params.get(key)
        if isinstance(value, str):
            params[key] = _column(table, value, key.replace("_", " "))
        elif isinstance(value, list | tuple):
            params[key] = [_column(table, str(v), key) if isinstance(v, str) else v for v in value]
    return params


def _no_rows(source: str, history: History, bounds: Bounds) -> ModelError:
    """Why a history has no rows: records filtered out, an empty range, or records the broker deleted."""
    if history.records:
        return ModelError(
            f"the query over '{source}' kept none of the {history.records:,} records it read",
            hint="check the WHERE clause and the decode/evaluation failures in the log",
        )
    ranges = {r.partition: (r.start, r.end) for r in history.lineage.partitions}
    message, hint = why_empty(f"'{source}'", ranges, bounds)
    return ModelError(message, hint=hint)
