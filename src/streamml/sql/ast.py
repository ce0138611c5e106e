"""Syntax tree of the KSQL dialect: statements, queries and expressions (plain dataclasses).

Positions (``pos``) are 1-based line/column pairs in the whole source text and never take part in equality,
so two spellings of the same expression compare equal.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from streamml.sql.types import SqlType


@dataclass(frozen=True, slots=True)
class Pos:
    """1-based line and column in the whole source text."""

    line: int = 0
    column: int = 0


NOWHERE = Pos()


# ---- expressions ----------------------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class Expr:
    """Base class of expressions."""

    pos: Pos = field(default=NOWHERE, compare=False, repr=False)


@dataclass(frozen=True, kw_only=True)
class Literal(Expr):
    """A constant; ``kind`` is one of ``string``, ``integer``, ``double``, ``boolean``, ``null``."""

    value: Any
    kind: str


@dataclass(frozen=True, kw_only=True)
class ColumnRef(Expr):
    """``name`` or ``qualifier.name`` (both already normalised)."""

    name: str
    qualifier: str | None = None


@dataclass(frozen=True, kw_only=True)
class Over:
    """``OVER (PARTITION BY partition [ROWS n PRECEDING])``: the call sees the last ``rows`` rows of its
    partition (``rows`` = n + 1, the current row included; ``None`` when the statement names no frame)."""

    partition: Expr
    rows: int | None = None
    pos: Pos = field(default=NOWHERE, compare=False, repr=False)


@dataclass(frozen=True, kw_only=True)
class FunctionCall(Expr):
    """``name(args)``; ``star`` is set for ``COUNT(*)``; ``over`` for a call over a window of rows."""

    name: str
    args: tuple[Expr, ...] = ()
    star: bool = False
    over: Over | None = None


@dataclass(frozen=True, kw_only=True)
class BinaryOp(Expr):
    """Arithmetic (``+ - * / %``), ``||``, comparisons, ``AND`` and ``OR``."""

    op: str
    left: Expr
    right: Expr


@dataclass(frozen=True, kw_only=True)
class Constructor(Expr):
    """``ARRAY[x, ...]``, ``STRUCT(name := x, ...)`` or ``MAP(key := value, ...)``; ``keys`` are the field
    names of a struct (upper case unless quoted) or the key expressions of a map, empty for an array."""

    kind: str
    keys: tuple[Any, ...] = ()
    values: tuple[Expr, ...] = ()


@dataclass(frozen=True, kw_only=True)
class UnaryOp(Expr):
    """``NOT x`` or ``-x``."""

    op: str
    operand: Expr


@dataclass(frozen=True, kw_only=True)
class IsNull(Expr):
    operand: Expr
    negated: bool = False


@dataclass(frozen=True, kw_only=True)
class InList(Expr):
    operand: Expr
    items: tuple[Expr, ...]
    negated: bool = False


@dataclass(frozen=True, kw_only=True)
class Between(Expr):
    operand: Expr
    low: Expr
    high: Expr
    negated: bool = False


@dataclass(frozen=True, kw_only=True)
class Like(Expr):
    operand: Expr
    pattern: Expr
    negated: bool = False


@dataclass(frozen=True, kw_only=True)
class Case(Expr):
    """Searched ``CASE WHEN c THEN r ... ELSE e END`` (a simple CASE is rewritten to this form)."""

    whens: tuple[tuple[Expr, Expr], ...]
    else_: Expr | None = None


@dataclass(frozen=True, kw_only=True)
class Cast(Expr):
    operand: Expr
    target: SqlType


@dataclass(frozen=True, kw_only=True)
class Dereference(Expr):
    """Struct field access ``base->field``."""

    base: Expr
    field: str


@dataclass(frozen=True, kw_only=True)
class Subscript(Expr):
    """Array element ``base[index]`` (1-based) or map lookup ``base['key']``."""

    base: Expr
    index: Expr


# ---- queries --------------------------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class SelectItem:
    """One item of a select list: an expression with optional alias, ``*`` or ``alias.*``."""

    expr: Expr | None
    alias: str | None = None
    star_qualifier: str | None = None
    pos: Pos = field(default=NOWHERE, compare=False, repr=False)

    @property
    def is_star(self) -> bool:
        return self.expr is None


@dataclass(frozen=True, kw_only=True)
class Relation:
    name: str
    alias: str | None = None
    pos: Pos = field(default=NOWHERE, compare=False, repr=False)


@dataclass(frozen=True, kw_only=True)
class Join:
    """``kind`` is ``INNER``, ``LEFT`` or ``FULL``; ``within`` is (before_ms, after_ms) for stream-stream."""

    kind: str
    relation: Relation
    on: Expr
    within: tuple[int, int] | None = None
    grace_ms: int | None = None
    pos: Pos = field(default=NOWHERE, compare=False, repr=False)


@dataclass(frozen=True, kw_only=True)
class WindowSpec:
    """``kind`` is ``TUMBLING``, ``HOPPING`` or ``SESSION``; all durations in milliseconds."""

    kind: str
    size_ms: int
    advance_ms: int | None = None
    grace_ms: int | None = None
    pos: Pos = field(default=NOWHERE, compare=False, repr=False)


@dataclass(frozen=True, kw_only=True)
class Query:
    select: tuple[SelectItem, ...]
    source: Relation
    joins: tuple[Join, ...] = ()
    window: WindowSpec | None = None
    where: Expr | None = None
    group_by: tuple[Expr, ...] = ()
    partition_by: tuple[Expr, ...] = ()
    having: Expr | None = None
    emit: str | None = None
    limit: int | None = None
    pos: Pos = field(default=NOWHERE, compare=False, repr=False)


# ---- statements -----------------------------------------------------------------------------------------


@dataclass(kw_only=True)
class Statement:
    """Base class: every statement keeps its own source text and where it starts in the whole text."""

    text: str = field(default="", compare=False)
    pos: Pos = field(default=NOWHERE, compare=False, repr=False)


@dataclass(kw_only=True)
class ColumnDef:
    name: str
    type: SqlType
    key: bool = False
    primary_key: bool = False
    pos: Pos = field(default=NOWHERE, compare=False, repr=False)


@dataclass(kw_only=True)
class CreateSource(Statement):
    """``CREATE STREAM|TABLE name (columns) WITH (...)``; ``kind`` is ``STREAM`` or ``TABLE``."""

    kind: str
    name: str
    columns: list[ColumnDef]
    properties: dict[str, Any] = field(default_factory=dict)
    or_replace: bool = False
    if_not_exists: bool = False


@dataclass(kw_only=True)
class CreateAsSelect(Statement):
    """``CREATE STREAM|TABLE name [WITH (...)] AS SELECT ...``."""

    kind: str
    name: str
    query: Query
    properties: dict[str, Any] = field(default_factory=dict)
    or_replace: bool = False
    if_not_exists: bool = False


@dataclass(kw_only=True)
class InsertInto(Statement):
    target: str
    query: Query


@dataclass(kw_only=True)
class InsertValues(Statement):
    """``INSERT INTO name [(col, ...)] VALUES (expr, ...)``: one record written to the source's topic."""

    target: str
    columns: tuple[str, ...] = ()
    values: tuple[Expr, ...] = ()


@dataclass(kw_only=True)
class DropSource(Statement):
    kind: str
    name: str
    if_exists: bool = False
    delete_topic: bool = False


@dataclass(kw_only=True)
class CreateFunction(Statement):
    """``CREATE FUNCTION name AS f('constant', ...)[->field...]``: ``name(args)`` calls ``f`` with the constants
    followed by ``args`` (a model as a named function: ``CREATE FUNCTION anomaly AS PREDICT('sensor-ae')->score``)."""

    name: str
    body: Expr
    or_replace: bool = False
    if_not_exists: bool = False


@dataclass(kw_only=True)
class DropFunction(Statement):
    name: str
    if_exists: bool = False


@dataclass(kw_only=True)
class CreateMonitor(Statement):
    """``CREATE MONITOR [IF NOT EXISTS] name WITH (MODEL=..., PREDICTIONS=..., LABELS=..., KEY=..., ...)``: a
    model monitor (streamml's own statement; a session on a cluster defines it, see ``monitor/``)."""

    name: str
    properties: dict[str, Any] = field(default_factory=dict)
    if_not_exists: bool = False


@dataclass(kw_only=True)
class DropMonitor(Statement):
    name: str
    if_exists: bool = False


@dataclass(kw_only=True)
class Show(Statement):
    """``SHOW|LIST STREAMS|TABLES|QUERIES|TOPICS|FUNCTIONS``."""

    what: str


@dataclass(kw_only=True)
class Describe(Statement):
    name: str
    extended: bool = False


@dataclass(kw_only=True)
class DescribeFunction(Statement):
    name: str


@dataclass(kw_only=True)
class Terminate(Statement):
    """``TERMINATE id``; ``query_id`` is None for ``TERMINATE ALL``."""

    query_id: str | None


@dataclass(kw_only=True)
class Explain(Statement):
    """``EXPLAIN statement`` or ``EXPLAIN query_id``."""

    statement: Statement | None = None
    query_id: str | None = None


@dataclass(kw_only=True)
class SetProperty(Statement):
    key: str
    value: str


@dataclass(kw_only=True)
class UnsetProperty(Statement):
    key: str


@dataclass(kw_only=True)
class SelectStatement(Statement):
    """A transient ``SELECT`` (push query with ``EMIT CHANGES`` or a batch query)."""

    query: Query
