"""User-defined scalar functions: vectorised Python (Arrow or NumPy in, Arrow or NumPy out).

>>> import pyarrow.compute as pc
>>> registry = FunctionRegistry()
>>> @udf(name="twice", returns="DOUBLE", params=["DOUBLE"], registry=registry)
... def twice(x):
...     return pc.multiply(x, 2)

A function declared without ``params`` accepts any number and types of arguments; it is registered with
DuckDB once per distinct argument signature, when a query using it is compiled. ``returns`` may be a type
(``"STRUCT<score DOUBLE, label STRING>"``) or a callable ``(arg_types, constant_args) -> SqlType`` for
functions whose result type depends on their arguments (such as a model name). Plug-ins publish functions
through the entry-point group ``streamml.functions``: each entry point names a :class:`UserFunction` or a
callable that takes the registry and registers its functions.

A function declared with ``rejects=True`` may set rows aside instead of failing the whole call: it is
called with a keyword ``reject(mask, reason)``, returns NULL for the rows in ``mask``, and those rows become
failures of its stage (by row, without re-running the batch). Where the query gives no row ids (inside an
aggregation, say) ``reject`` raises, and the executor isolates the rows by re-running parts of the batch.

Called ``OVER (PARTITION BY key ROWS n PRECEDING)``, a function sees windows instead of values: each
non-constant argument arrives as a fixed-size list of that argument's last n + 1 values for the row's key
(oldest first), one call per batch for the rows whose key has that many (see :mod:`streamml.sql.sequences`).
"""

from __future__ import annotations

import contextlib
import hashlib
import inspect
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from typing import Any

import numpy as np
import pyarrow as pa

from streamml.errors import SqlError
from streamml.sql.types import SqlType

__all__ = ["ENTRY_POINT_GROUP", "CallFailures", "FunctionRegistry", "UserFunction", "default_registry", "udf"]

log = logging.getLogger(__name__)

ENTRY_POINT_GROUP = "streamml.functions"

ReturnSpec = SqlType | Callable[[list[SqlType], list[Any]], SqlType]


def _as_type(spec: str | SqlType) -> SqlType:
    if isinstance(spec, SqlType):
        return spec
    from streamml.sql.parser import parse_type

    return parse_type(spec)


@dataclass
class CallFailures:
    """What the user functions of one query run reported: the stages of the functions that raised (DuckDB
    passes a Python error on as text only) and, per input row id, the rows set aside (reason, stage)."""

    stages: list[str] = field(default_factory=list)
    rows: dict[int, tuple[str, str]] = field(default_factory=dict)

    def clear(self) -> None:
        self.stages.clear()
        self.rows.clear()


@dataclass(frozen=True)
class UserFunction:
    """A vectorised Python function callable from SQL."""

    name: str
    func: Callable[..., Any]
    returns: ReturnSpec
    params: tuple[SqlType, ...] | None = None
    description: str = ""
    #: for a call with constant arguments only: the names of the columns to pass after them
    #: (``PREDICT('fraud')`` reads the columns the model's signature names)
    expand: Callable[[list[Any]], list[str]] | None = None
    #: the runtime stage a row failing in this function is charged to (its error policy applies)
    stage: str = "evaluate"
    #: called with ``reject=(mask, reason)`` to set rows aside (see the module docstring)
    rejects: bool = False
    #: for a call ``OVER (PARTITION BY ...)`` without ROWS: how many rows it reads, from its constant
    #: arguments (a sequence model's window length); ``None``: the statement must say
    window: Callable[[list[Any]], int | None] | None = None

    def result_type(self, arg_types: list[SqlType], constants: list[Any]) -> SqlType:
        """The SQL type of a call with these argument types (and literal values, where constant)."""
        if isinstance(self.returns, SqlType):
            return self.returns
        return self.returns(arg_types, constants)

    def check_arguments(self, arg_types: list[SqlType]) -> None:
        if self.params is None:
            return
        if len(arg_types) != len(self.params):
            raise SqlError(f"{self.name} takes {len(self.params)} arguments, got {len(arg_types)}")

    def duckdb_name(self, arg_types: list[SqlType], result: SqlType) -> str:
        """Name of the DuckDB function registered for one signature."""
        digest = hashlib.sha1(
            (",".join(str(t) for t in arg_types) + "->" + str(result)).encode(), usedforsecurity=False
        ).hexdigest()[:10]
        return f"udf_{self.name.lower()}_{len(arg_types)}_{digest}"

    def register(
        self,
        con: Any,
        arg_types: list[SqlType],
        result: SqlType,
        failures: CallFailures | None = None,
        *,
        row_ids: bool = False,
    ) -> str:
        """Register this function with DuckDB for one argument signature; returns the DuckDB name.

        Each call that raises appends this function's ``stage`` to ``failures.stages``. With ``row_ids`` the
        first argument is the input row id (not passed on): rows the function rejects are recorded by id in
        ``failures.rows``.
        """
        declared = list(arg_types) if row_ids or self.params is None else list(self.params)
        name = self.duckdb_name(declared, result)
        sql_types = [con.dtype(t.to_duckdb() if t.name != "NULL" else "VARCHAR") for t in declared]
        arrow_type = result.to_arrow()
        func, stage, rejects = self.func, self.stage, self.rejects

        def call(*arrays: Any) -> pa.Array:
            args = [a.combine_chunks() if isinstance(a, pa.ChunkedArray) else a for a in arrays]
            ids = args.pop(0) if row_ids else None
            kwargs: dict[str, Any] = {}
            if rejects:

                def reject(mask: np.ndarray, reason: str) -> None:
                    if ids is None or failures is None:
                        raise ValueError(reason)
                    rows = np.asarray(ids, np.int64)[np.asarray(mask, bool)].tolist()
                    failures.rows.update({row: failures.rows.get(row, (reason, stage)) for row in rows})

                kwargs["reject"] = reject
            try:
                out = func(*args, **kwargs)
            except Exception:
                if failures is not None:
                    failures.stages.append(stage)
                raise
            if isinstance(out, pa.ChunkedArray):
                out = out.combine_chunks()
            if not isinstance(out, pa.Array):
                out = pa.array(np.asarray(out) if not isinstance(out, list) else out, type=arrow_type)
            if out.type != arrow_type:
                out = out.cast(arrow_type)
            return out

        call.__signature__ = inspect.Signature(  # type: ignore[attr-defined]
            [inspect.Parameter(f"a{i}", inspect.Parameter.POSITIONAL_ONLY) for i in range(len(declared))]
        )
        with contextlib.suppress(Exception):
            con.remove_function(name)
        con.create_function(
            name,
            call,
            sql_types,
            con.dtype(result.to_duckdb()),
            type="arrow",
            null_handling="special",
            side_effects=False,
        )
        return name


@dataclass
class FunctionRegistry:
    """User functions by upper-case name."""

    functions: dict[str, UserFunction] = field(default_factory=dict)

    def add(self, function: UserFunction, *, replace: bool = True) -> None:
        key = function.name.upper()
        if key in self.functions and not replace:
            raise SqlError(f"function '{function.name}' is already registered")
        self.functions[key] = function

    def get(self, name: str) -> UserFunction | None:
        return self.functions.get(name.upper())

    def names(self) -> list[str]:
        return sorted(self.functions)

    def copy(self) -> FunctionRegistry:
        return FunctionRegistry(dict(self.functions))

    def load_entry_points(self, group: str = ENTRY_POINT_GROUP) -> list[str]:
        """Load plug-in functions from installed packages; returns the entry-point names loaded."""
        loaded: list[str] = []
        for ep in entry_points(group=group):
            try:
                obj = ep.load()
            except Exception as exc:
                raise SqlError(f"cannot load SQL function plug-in '{ep.name}' ({ep.value}): {exc}") from exc
            if isinstance(obj, UserFunction):
                self.add(obj)
            elif callable(obj):
                obj(self)
            else:
                raise SqlError(f"SQL function plug-in '{ep.name}' is neither a UserFunction nor a callable")
            loaded.append(ep.name)
            log.debug("loaded SQL function plug-in %s", ep.name)
        return loaded


_DEFAULT = FunctionRegistry()


def default_registry() -> FunctionRegistry:
    """The registry that :func:`udf` uses when no registry is given."""
    return _DEFAULT


def udf(
    *,
    name: str | None = None,
    returns: str | SqlType | Callable[[list[SqlType], list[Any]], SqlType],
    params: Sequence[str | SqlType] | None = None,
    description: str | None = None,
    registry: FunctionRegistry | None = None,
) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Register a vectorised function as a SQL function; returns the function unchanged."""

    def decorate(func: Callable[..., Any]) -> Callable[..., Any]:
        returns_spec: ReturnSpec = (
            returns if callable(returns) and not isinstance(returns, SqlType) else _as_type(returns)
        )
        function = UserFunction(
            name=(name or func.__name__).upper(),
            func=func,
            returns=returns_spec,
            params=tuple(_as_type(p) for p in params) if params is not None else None,
            description=description if description is not None else (inspect.getdoc(func) or "").split("\n")[0],
        )
        (registry or _DEFAULT).add(function)
        return func

    return decorate
