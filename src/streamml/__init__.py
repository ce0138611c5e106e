"""streamml: real-time machine learning on Apache Kafka.

>>> import streamml                                                       # doctest: +SKIP
>>> streamml.sql("CREATE STREAM tx (Id BIGINT, Amount DOUBLE) WITH (KAFKA_TOPIC='tx', VALUE_FORMAT='JSON');")
>>> streamml.query("SELECT Id, Amount FROM tx WHERE Amount > 100;").to_pandas()
>>> streamml.train("autoencoder", "tx", label="Class", name="fraud")
>>> streamml.Client().predict("iris", {"SEPAL_LENGTH": 5.1, ...})    # request/reply over Kafka

Settings come from ``STREAMML_*`` variables (see :mod:`streamml.config`) unless passed explicitly.

``streamml.sql`` is both the documented function and the name of the SQL subpackage (:mod:`streamml.sql`).
Importing a submodule binds the submodule to its parent's attribute, so a plain function of that name would
be replaced by the module on the first ``import streamml.sql...`` anywhere. Instead the subpackage itself is
made callable: ``streamml.sql(text)`` runs statements against the cluster and ``streamml.sql.SqlEngine`` (or
``import streamml.sql as x``) is the broker-free SQL layer, whatever was imported first.
"""

from __future__ import annotations

import importlib
import sys
import types
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pyarrow as pa

    from streamml.config import Settings
    from streamml.models.registry import ModelVersion
    from streamml.runtime.session import Outcome
    from streamml.serve.requests import Client as Client

__version__ = "0.1.0"
__all__ = ["Client", "query", "sql", "train"]


def _settings(settings: Settings | None) -> Settings:
    from streamml.config import load_settings

    return settings or load_settings()


def run_sql(text: str, settings: Settings | None = None) -> list[Outcome]:
    """Run KSQL statements against the cluster; a pull query's rows are in ``outcome.rows`` (Arrow).

    This is what ``streamml.sql(text)`` calls; it runs ``CREATE MONITOR`` / ``DROP MONITOR`` too.
    """
    from streamml.monitor.statements import MONITOR_STATEMENTS
    from streamml.runtime.session import Session

    return Session(_settings(settings), statements=MONITOR_STATEMENTS).execute(text)


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


def __getattr__(name: str) -> Any:
    """``streamml.Client``: request/reply over Kafka (:class:`streamml.serve.requests.Client`), loaded on use."""
    if name == "Client":
        from streamml.serve.requests import Client

        return Client
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


class _CallableSqlPackage(types.ModuleType):
    """The class of the :mod:`streamml.sql` package object: calling it runs statements (:func:`run_sql`)."""

    def __call__(self, text: str, settings: Settings | None = None) -> list[Outcome]:
        return run_sql(text, settings)


def _callable(module: types.ModuleType) -> types.ModuleType:
    if module.__name__ == f"{__name__}.sql" and type(module) is types.ModuleType:
        module.__class__ = _CallableSqlPackage
    return module


class _Package(types.ModuleType):
    """The class of this package object: its ``sql`` attribute is always the (callable) SQL subpackage.

    The import system binds ``streamml.sql`` through the setter once the subpackage is loaded; reading the
    attribute first imports it (lazily: ``import streamml`` stays cheap).
    """

    @property
    def sql(self) -> types.ModuleType:
        loaded = sys.modules.get(f"{__name__}.sql")
        return _callable(loaded if loaded is not None else importlib.import_module(f"{__name__}.sql"))

    @sql.setter
    def sql(self, module: types.ModuleType) -> None:
        _callable(module)  # sys.modules holds it; the getter hands it out


_callable_loaded = sys.modules.get(f"{__name__}.sql")
if _callable_loaded is not None:  # reloading this package after the subpackage was imported
    _callable(_callable_loaded)
sys.modules[__name__].__class__ = _Package
