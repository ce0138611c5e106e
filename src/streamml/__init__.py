"""streamml: real-time machine learning on Apache Kafka.

>>> import streamml                                                       # doctest: +SKIP
>>> streamml.sql("CREATE STREAM tx (Id BIGINT, Amount DOUBLE) WITH (KAFKA_TOPIC='tx', VALUE_FORMAT='JSON');")
>>> streamml.query("SELECT Id, Amount FROM tx WHERE Amount > 100;").to_pandas()
>>> streamml.train("autoencoder", "tx", label="Class", name="fraud")

Settings come from ``STREAMML_*`` variables (see :mod:`streamml.config`) unless passed explicitly.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pyarrow as pa

    from streamml.config import Settings
    from streamml.models.registry import ModelVersion
    from streamml.runtime.session import Outcome

__version__ = "0.1.0"
__all__ = ["__version__", "query", "sql", "train"]


def _settings(settings: Settings | None) -> Settings:
    from streamml.config import load_settings

    return settings or load_settings()


def sql(text: str, settings: Settings | None = None) -> list[Outcome]:
    """Run KSQL statements against the cluster; a pull query's rows are in ``outcome.rows`` (Arrow)."""
    from streamml.runtime.session import Session

    return Session(_settings(settings)).execute(text)


def query(text: str, settings: Settings | None = None, limit: int | None = None) -> pa.Table:
    """Run one ``SELECT`` and return its rows as an Arrow table (``.to_pandas()`` for a DataFrame)."""
    from streamml.runtime.session import Session

    return Session(_settings(settings)).query(text, limit=limit)


def train(recipe: str, source: str, *, name: str, settings: Settings | None = None, **options: Any) -> ModelVersion:
    """Train ``recipe`` on the history of stream or topic ``source`` and register the result as ``name``.

    ``options`` are those of :func:`streamml.runtime.training.train_from_stream` (``label``, ``sql``,
    ``params``, ``from_offset``, ``to_time``, ``seed``, ...).
    """
    from streamml.runtime.training import train_from_stream

    options.setdefault("label", None)
    return train_from_stream(_settings(settings), recipe, source, name=name, **options)
