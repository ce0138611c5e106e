"""Typed compilation of expressions to DuckDB SQL: name resolution, type checking, functions, casts.

Every identifier is resolved in a :class:`Scope`; errors name the expression's line and column and suggest
the closest known name. In aggregate mode, group-by expressions and aggregate calls become references to
columns of the aggregation result (``__key0``, ``__agg0``, ...).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from streamml.errors import SqlError
from streamml.sql import ast
from streamml.sql.catalog import FunctionAlias, Source, suggest
from streamml.sql.functions import (
    AGGREGATES,
    SCALARS,
    AggregateFunction,
    Typed,
    by_offset,
    literal_type,
    parse_timestamp_sql,
    sql_string,
)
from streamml.sql.types import (
    BIGINT,
    BOOLEAN,
    DOUBLE,
    INTEGER,
    NULL,
    STRING,
    SqlType,
    common_type,
    comparable,
    numeric_supertype,
)
from streamml.sql.udf import FunctionRegistry, UserFunction


def quote(name: str) -> str:
    """A quoted DuckDB identifier."""
    return '"' + name.replace('"', '""') + '"'


def event_time_sql(source: Source, prefix: str = "") -> str | None:
    """A record's event time in epoch ms when ``source`` names a ``TIMESTAMP`` column (else None): the column
    itself (BIGINT), a TIMESTAMP, or text parsed with ``TIMESTAMP_FORMAT``."""
    if source.timestamp is None:
        return None
    column = source.column(source.timestamp)
    assert column is not None
    sql = prefix + quote(column.name)
    if column.type.name == "TIMESTAMP":
        return f"epoch_ms({sql})"
    if column.type.is_string and source.timestamp_format:
        return f"epoch_ms({parse_timestamp_sql(sql, source.timestamp_format)})"
    return f"CAST({sql} AS BIGINT)"


@dataclass(frozen=True)
class ScopeColumn:
    """A column visible to expressions: its name, the qualifier (source alias) and its SQL."""

    name: str
    type: SqlType
    sql: str
    qualifier: str | None = None


@dataclass
class Scope:
    """Columns visible to an expression."""

    columns: list[ScopeColumn] = field(default_factory=list)

    def add(self, column: ScopeColumn) -> None:
        self.columns.append(column)

    def resolve(self, ref: ast.ColumnRef, where: ErrorSite) -> ScopeColumn:
        candidates = self.columns
        if ref.qualifier is not None:
            candidates = [
                c for c in candidates if c.qualifier is not None and c.qualifier.upper() == ref.qualifier.upper()
            ]
            if not candidates:
                qualifiers = sorted({c.qualifier for c in self.columns if c.qualifier})
                raise where.error(
                    f"unknown source alias '{ref.qualifier}'", ref.pos, suggest(ref.qualifier, qualifiers)
                )
        exact = [c for c in candidates if c.name == ref.name]
        matches = exact or [c for c in candidates if c.name.upper() == ref.name.upper()]
        if len(matches) == 1:
            return matches[0]
        if len(matches) > 1:
            raise where.error(f"column '{ref.name}' is ambiguous", ref.pos, "qualify it with the source alias")
        shown = f"{ref.qualifier}.{ref.name}" if ref.qualifier else ref.name
        raise where.error(f"unknown column '{shown}'", ref.pos, suggest(ref.name, [c.name for c in candidates]))


@dataclass(frozen=True)
class ErrorSite:
    """Where errors point: the whole source text (positions are relative to it)."""

    text: str | None

    def error(self, message: str, pos: ast.Pos, hint: str | None = None) -> SqlError:
        line = pos.line or None
        return SqlError(message, line=line, column=pos.column if line else None, statement=self.text, hint=hint)


@dataclass(frozen=True)
class AggregateCall:
    """One aggregate call of a query: ``__agg{index}`` in the aggregation result."""

    index: int
    function: AggregateFunction
    argument: Typed | None
    result_type: SqlType


@dataclass(frozen=True)
class UdfUse:
    """A user function signature a compiled query needs registered."""

    function: UserFunction
    arg_types: tuple[SqlType, ...]
    result_type: SqlType
    duckdb_name: str
    #: the first argument is the input row id (the function may reject rows)
    row_ids: bool = False
    #: the constant arguments of each call with this signature (None where an argument is not constant)
    constants: frozenset[tuple[Any, ...]] = frozenset()


@dataclass(frozen=True)
class WindowCall:
    """A user function called ``OVER (PARTITION BY ... ROWS n PRECEDING)``: ``__win{index}`` of the input.

    ``arguments`` are the call's arguments: constants stay constants; every other argument is numeric and
    reaches the function as a list of its last ``rows`` values in the partition (oldest first).
    """

    index: int
    function: UserFunction
    arguments: tuple[Typed, ...]
    result_type: SqlType
    partition: Typed
    rows: int
    #: where ``OVER`` stands in the statement
    pos: ast.Pos = field(default=ast.NOWHERE, compare=False)

    @property
    def label(self) -> str:
        args = ", ".join(a.sql for a in self.arguments)
        return f"{self.function.name}({args}) OVER (PARTITION BY {self.partition.sql} ROWS {self.rows - 1} PRECEDING)"


class ExpressionCompiler:
    """Compiles expressions against one scope; collects casts, UDF uses, window calls and (in aggregate mode)
    aggregates."""

    def __init__(
        self,
        scope: Scope,
        udfs: FunctionRegistry,
        text: str | None = None,
        *,
        group_by: list[ast.Expr] | None = None,
        output_scope: Scope | None = None,
        row_id: str | None = None,
        aliases: Mapping[str, FunctionAlias] | None = None,
        windows: bool = False,
    ) -> None:
        self.scope = scope
        #: calls OVER a window of rows, when the query allows them (``None``: it does not)
        self.window_calls: list[WindowCall] | None = [] if windows else None
        self._in_window = False
        #: functions defined in SQL (``CREATE FUNCTION``), by upper-case name
        self.aliases = aliases or {}
        #: the SQL of every user function call compiled, in order (a repeated call is computed once per batch)
        self.udf_calls: list[str] = []
        #: SQL of the input row id, where the query has one per output row (functions that reject rows get it)
        self.row_id = row_id
        self.udfs = udfs
        self.where = ErrorSite(text)
        self.group_by = group_by
        self.output_scope = output_scope
        self.cast_checks: list[str] = []
        self.udf_uses: dict[str, UdfUse] = {}
        self.aggregates: list[AggregateCall] = []
        self.group_keys: list[Typed] = [self._compile(e) for e in group_by] if group_by is not None else []
        self._in_aggregate = False

    # ---- entry points -----------------------------------------------------------------------------------
    def compile(self, expr: ast.Expr) -> Typed:
        """Compile ``expr``; in aggregate mode the result refers to aggregation-result columns."""
        if self.group_by is None:
            return self._compile(expr)
        return self._compile_aggregated(expr)

    def predicate(self, expr: ast.Expr, clause: str) -> Typed:
        """Compile a boolean condition (WHERE, HAVING, ON)."""
        typed = self.compile(expr)
        if typed.type.name not in ("BOOLEAN", "NULL"):
            raise self.where.error(f"{clause} must be a BOOLEAN condition, got {typed.type}", expr.pos)
        return typed

    # ---- aggregate mode ---------------------------------------------------------------------------------
    def _compile_aggregated(self, expr: ast.Expr) -> Typed:
        assert self.group_by is not None
        for i, key in enumerate(self.group_by):
            if key == expr:
                return Typed(quote(f"__key{i}"), self.group_keys[i].type)
        if isinstance(expr, ast.FunctionCall) and expr.name in AGGREGATES:
            return self._aggregate(expr)
        if isinstance(expr, ast.ColumnRef):
            if self.output_scope is not None and expr.qualifier is None:
                for c in self.output_scope.columns:
                    if c.name == expr.name:
                        return Typed(c.sql, c.type)
            self.scope.resolve(expr, self.where)  # unknown columns are reported as such
            raise self.where.error(
                f"column '{expr.name}' must be in GROUP BY or inside an aggregate function", expr.pos
            )
        return self._compile(expr, nested=self._compile_aggregated)

    def _aggregate(self, call: ast.FunctionCall) -> Typed:
        function = AGGREGATES[call.name]
        if call.name in ("LATEST_BY_OFFSET", "EARLIEST_BY_OFFSET") and len(call.args) > 1:
            function, call = self._by_offset(call)
        if call.star:
            if call.name != "COUNT":
                raise self.where.error(f"{call.name}(*) is not allowed; only COUNT(*)", call.pos)
            argument = None
            result = function.result_type(literal_type("integer"))
        else:
            if not call.args and call.name == "COUNT":  # COUNT() counts rows, as COUNT(*)
                return self._aggregate(ast.FunctionCall(name="COUNT", star=True, pos=call.pos))
            if len(call.args) != 1:
                raise self.where.error(f"{call.name} takes exactly one argument", call.pos)
            argument = self._compile(call.args[0])
            if call.name in ("SUM", "AVG") and not argument.type.is_numeric:
                raise self.where.error(f"{call.name} needs a numeric argument, got {argument.type}", call.args[0].pos)
            result = function.result_type(argument.type)
        for existing in self.aggregates:
            if existing.function is function and existing.argument == argument:
                return Typed(quote(f"__agg{existing.index}"), existing.result_type)
        index = len(self.aggregates)
        self.aggregates.append(AggregateCall(index, function, argument, result))
        return Typed(quote(f"__agg{index}"), result)

    def _by_offset(self, call: ast.FunctionCall) -> tuple[AggregateFunction, ast.FunctionCall]:
        """``*_BY_OFFSET(col, n[, ignoreNulls])`` or ``*_BY_OFFSET(col, ignoreNulls)``: the function for those
        constants, and the call with its column only."""
        rest = call.args[1:]
        kinds = [a.kind if isinstance(a, ast.Literal) else None for a in rest]
        usage = f"{call.name}(col[, n][, ignoreNulls]): n a positive integer literal, ignoreNulls TRUE or FALSE"
        if kinds == ["boolean"]:
            if rest[0].value is False:  # type: ignore[attr-defined]
                raise self.where.error(f"{call.name}(col, FALSE) is not supported yet", call.pos, "use n = 1")
            return AGGREGATES[call.name], ast.FunctionCall(name=call.name, args=call.args[:1], pos=call.pos)
        if kinds not in (["integer"], ["integer", "boolean"]) or int(rest[0].value) < 1:  # type: ignore[attr-defined]
            raise self.where.error(f"{call.name} takes {usage}", call.pos)
        ignore = bool(rest[1].value) if len(rest) == 2 else True  # type: ignore[attr-defined]
        function = by_offset(call.name, int(rest[0].value), ignore)  # type: ignore[attr-defined]
        return function, ast.FunctionCall(name=call.name, args=call.args[:1], pos=call.pos)

    # ---- expressions ------------------------------------------------------------------------------------
    def _compile(self, expr: ast.Expr, nested: Any = None) -> Typed:
        sub = nested or self._compile
        method = getattr(self, "_" + type(expr).__name__.lower(), None)
        if method is None:  # pragma: no cover - every node type has a method
            raise self.where.error(f"unsupported expression {type(expr).__name__}", expr.pos)
        result: Typed = method(expr, sub)
        return result

    def _literal(self, e: ast.Literal, sub: Any) -> Typed:
        t = literal_type(e.kind)
        if e.kind == "string":
            return Typed(sql_string(e.value), t, e.value)
        if e.kind == "null":
            return Typed("NULL", t, None)
        if e.kind == "boolean":
            return Typed("TRUE" if e.value else "FALSE", BOOLEAN, e.value)
        if e.kind == "double":
            return Typed(f"CAST({e.value!r} AS DOUBLE)", DOUBLE, e.value)
        return Typed(f"CAST({e.value} AS {t.to_duckdb()})", t, e.value)

    def _columnref(self, e: ast.ColumnRef, sub: Any) -> Typed:
        column = self.scope.resolve(e, self.where)
        return Typed(column.sql, column.type)

    def _unaryop(self, e: ast.UnaryOp, sub: Any) -> Typed:
        operand = sub(e.operand)
        if e.op == "NOT":
            self._expect_boolean(operand, e.operand, "NOT")
            return Typed(f"(NOT {operand.sql})", BOOLEAN)
        if not operand.type.is_numeric:
            raise self.where.error(f"cannot negate {operand.type}", e.pos)
        return Typed(f"(-{operand.sql})", operand.type)

    def _expect_boolean(self, typed: Typed, expr: ast.Expr, op: str) -> None:
        if typed.type.name not in ("BOOLEAN", "NULL"):
            raise self.where.error(f"{op} needs BOOLEAN operands, got {typed.type}", expr.pos)

    def _binaryop(self, e: ast.BinaryOp, sub: Any) -> Typed:
        left, right = sub(e.left), sub(e.right)
        if e.op in ("AND", "OR"):
            self._expect_boolean(left, e.left, e.op)
            self._expect_boolean(right, e.right, e.op)
            return Typed(f"({left.sql} {e.op} {right.sql})", BOOLEAN)
        if e.op == "||":
            if not (left.type.is_string and right.type.is_string):
                raise self.where.error(f"'||' needs STRING operands, got {left.type} and {right.type}", e.pos)
            return Typed(f"({left.sql} || {right.sql})", STRING)
        if e.op in ("=", "!=", "<", "<=", ">", ">=", "IS DISTINCT FROM", "IS NOT DISTINCT FROM"):
            left, right = coerce_literal(left, right.type), coerce_literal(right, left.type)
            if not comparable(left.type, right.type):
                raise self.where.error(f"cannot compare {left.type} with {right.type} using '{e.op}'", e.pos)
            op = "<>" if e.op == "!=" else e.op
            return Typed(f"({left.sql} {op} {right.sql})", BOOLEAN)
        if not (left.type.is_numeric and right.type.is_numeric):
            raise self.where.error(f"cannot apply '{e.op}' to {left.type} and {right.type}", e.pos)
        result = numeric_supertype(left.type, right.type)
        op = "//" if e.op == "/" and result.is_integral else e.op
        return Typed(f"CAST(({left.sql} {op} {right.sql}) AS {result.to_duckdb()})", result)

    def _constructor(self, e: ast.Constructor, sub: Any) -> Typed:
        values = [sub(v) for v in e.values]
        if e.kind == "STRUCT":
            if len(set(e.keys)) != len(e.keys):
                raise self.where.error("a STRUCT names each field once", e.pos)
            packed = ", ".join(f"{quote(k)} := {v.sql}" for k, v in zip(e.keys, values, strict=True))
            return Typed(
                f"struct_pack({packed})", SqlType.struct(list(zip(e.keys, [v.type for v in values], strict=True)))
            )
        element = self._common(values, e, "element" if e.kind == "ARRAY" else "value")
        items = "[" + ", ".join(f"CAST({v.sql} AS {element.to_duckdb()})" for v in values) + "]"
        if e.kind == "ARRAY":
            return Typed(f"{items}::{SqlType.array(element).to_duckdb()}", SqlType.array(element))
        keys = [sub(k) for k in e.keys]
        key = self._common(keys, e, "key")
        names = "[" + ", ".join(f"CAST({k.sql} AS {key.to_duckdb()})" for k in keys) + "]"
        return Typed(f"map({names}, {items})", SqlType.map(key, element))

    def _common(self, items: list[Typed], e: ast.Constructor, what: str) -> SqlType:
        """The type every one of ``items`` converts to (NULLs alone: STRING, as ksqlDB's literals)."""
        common = common_type([i.type for i in items]) if items else NULL
        if common is None:
            found = ", ".join(str(i.type) for i in items)
            raise self.where.error(f"{e.kind}(...) needs one {what} type, got {found}", e.pos)
        return STRING if common.name == "NULL" else common

    def _isnull(self, e: ast.IsNull, sub: Any) -> Typed:
        operand = sub(e.operand)
        return Typed(f"({operand.sql} IS {'NOT ' if e.negated else ''}NULL)", BOOLEAN)

    def _inlist(self, e: ast.InList, sub: Any) -> Typed:
        operand = sub(e.operand)
        items = [coerce_literal(sub(i), operand.type) for i in e.items]
        if common_type([operand.type, *(i.type for i in items)]) is None:
            raise self.where.error("IN list items must have the same type as the tested value", e.pos)
        inner = ", ".join(i.sql for i in items)
        return Typed(f"({operand.sql} {'NOT ' if e.negated else ''}IN ({inner}))", BOOLEAN)

    def _between(self, e: ast.Between, sub: Any) -> Typed:
        operand = sub(e.operand)
        low, high = coerce_literal(sub(e.low), operand.type), coerce_literal(sub(e.high), operand.type)
        if not (comparable(operand.type, low.type) and comparable(operand.type, high.type)):
            raise self.where.error(f"BETWEEN bounds must be comparable with {operand.type}", e.pos)
        neg = "NOT " if e.negated else ""
        return Typed(f"({operand.sql} {neg}BETWEEN {low.sql} AND {high.sql})", BOOLEAN)

    def _like(self, e: ast.Like, sub: Any) -> Typed:
        operand, pattern = sub(e.operand), sub(e.pattern)
        if not (operand.type.is_string and pattern.type.is_string):
            raise self.where.error("LIKE needs STRING operands", e.pos)
        return Typed(f"({operand.sql} {'NOT ' if e.negated else ''}LIKE {pattern.sql})", BOOLEAN)

    def _case(self, e: ast.Case, sub: Any) -> Typed:
        parts: list[str] = []
        results: list[Typed] = []
        for cond, res in e.whens:
            c = sub(cond)
            self._expect_boolean(c, cond, "WHEN")
            r = sub(res)
            results.append(r)
            parts.append(f"WHEN {c.sql} THEN {r.sql}")
        if e.else_ is not None:
            results.append(sub(e.else_))
            parts.append(f"ELSE {results[-1].sql}")
        result = common_type([r.type for r in results])
        if result is None:
            raise self.where.error(
                "CASE branches have incompatible types: " + ", ".join(str(r.type) for r in results), e.pos
            )
        return Typed(f"(CASE {' '.join(parts)} END)", result if result.name != "NULL" else STRING)

    def _cast(self, e: ast.Cast, sub: Any) -> Typed:
        operand = sub(e.operand)
        target = e.target.to_duckdb()
        if operand.type == e.target:
            return Typed(operand.sql, e.target)
        sql = f"TRY_CAST({operand.sql} AS {target})"
        if operand.type.name == "STRING" and e.target.is_integral:
            # like Java's parseInt: only an optionally signed run of digits converts
            trimmed = f"trim({operand.sql})"
            sql = f"(CASE WHEN regexp_full_match({trimmed}, '[+-]?[0-9]+') THEN TRY_CAST({trimmed} AS {target}) END)"
        if operand.type.name != "NULL":
            self.cast_checks.append(f"({operand.sql} IS NOT NULL AND {sql} IS NULL)")
        return Typed(sql, e.target)

    def _dereference(self, e: ast.Dereference, sub: Any) -> Typed:
        base = sub(e.base)
        if base.type.name != "STRUCT":
            raise self.where.error(f"'->' needs a STRUCT, got {base.type}", e.pos)
        field_type = base.type.field(e.field)
        if field_type is None:
            raise self.where.error(
                f"unknown struct field '{e.field}'", e.pos, suggest(e.field, list(base.type.field_names))
            )
        name = next(n for n in base.type.field_names if n.upper() == e.field.upper())
        return Typed(f"struct_extract({base.sql}, {sql_string(name)})", field_type)

    def _subscript(self, e: ast.Subscript, sub: Any) -> Typed:
        base, index = sub(e.base), sub(e.index)
        if base.type.name == "ARRAY":
            if not index.type.is_integral:
                raise self.where.error("array index must be an integer", e.index.pos)
            return Typed(f"list_extract({base.sql}, {index.sql})", base.type.args[0])
        if base.type.name == "MAP":
            return Typed(f"map_extract_value({base.sql}, {index.sql})", base.type.args[1])
        raise self.where.error(f"'[...]' needs an ARRAY or MAP, got {base.type}", e.pos)

    def _functioncall(self, e: ast.FunctionCall, sub: Any) -> Typed:
        alias = self.aliases.get(e.name.upper())
        if alias is not None and e.name not in SCALARS and self.udfs.get(e.name) is None:
            constants = tuple(ast.Literal(value=c, kind=_literal_kind(c), pos=e.pos) for c in alias.constants)
            body: ast.Expr = ast.FunctionCall(name=alias.target, args=(*constants, *e.args), over=e.over, pos=e.pos)
            for name in alias.fields:
                body = ast.Dereference(base=body, field=name, pos=e.pos)
            return sub(body)
        if e.name in AGGREGATES:
            raise self.where.error(f"aggregate function {e.name} is only allowed with GROUP BY", e.pos)
        user = self.udfs.get(e.name)
        if user is not None and user.expand is not None and e.args and all(isinstance(a, ast.Literal) for a in e.args):
            try:
                names = user.expand([a.value for a in e.args])  # type: ignore[attr-defined]
            except SqlError as exc:
                raise self.where.error(exc.message, e.pos, exc.hint) from None
            e = replace(e, args=(*e.args, *(ast.ColumnRef(name=n.upper(), pos=e.pos) for n in names)))
        if e.over is not None:
            return self._window_call(user, e, sub)
        args = [sub(a) for a in e.args]
        builtin = SCALARS.get(e.name)
        if builtin is not None:
            if len(args) < builtin.min_args or (builtin.max_args is not None and len(args) > builtin.max_args):
                raise self.where.error(f"wrong number of arguments for {builtin.signature}", e.pos)
            try:
                return builtin.compile(args)
            except SqlError as exc:
                raise self.where.error(exc.message, e.pos, exc.hint) from None
        if user is not None:
            return self._user_call(user, e, args)
        known = list(SCALARS) + list(AGGREGATES) + self.udfs.names()
        raise self.where.error(f"unknown function '{e.name}'", e.pos, suggest(e.name, known))

    def _window_call(self, user: UserFunction | None, e: ast.FunctionCall, sub: Any) -> Typed:
        over = e.over
        assert over is not None
        if user is None:
            raise self.where.error(f"OVER (...) applies to user functions such as PREDICT, not to {e.name}", over.pos)
        if self.window_calls is None:
            raise self.where.error("calls OVER a window are not supported in aggregations, joins or WHERE", over.pos)
        if self._in_window:
            raise self.where.error("a call OVER a window cannot be nested in another one", over.pos)
        self._in_window = True
        try:
            partition = sub(over.partition)
            args = [sub(a) for a in e.args]
        finally:
            self._in_window = False
        for arg, node in zip(args, e.args, strict=True):
            if not arg.is_constant and not arg.type.is_numeric:
                raise self.where.error(
                    f"arguments of {e.name}(...) OVER a window must be numeric or constant, got {arg.type}", node.pos
                )
        constants = [a.value if a.is_constant else None for a in args]
        expected = user.window(constants) if user.window else None
        if over.rows is not None and expected is not None and over.rows != expected:
            raise self.where.error(
                f"{e.name}(...) reads windows of {expected} rows, this frame has {over.rows}",
                over.pos,
                f"write ROWS {expected - 1} PRECEDING, or leave the frame out",
            )
        rows = over.rows if over.rows is not None else expected
        if rows is None:
            raise self.where.error(
                f"{e.name}(...) OVER needs a frame", over.pos, "write OVER (PARTITION BY key ROWS 9 PRECEDING)"
            )
        windowed = [a.type if a.is_constant else SqlType.array(DOUBLE) for a in args]
        try:
            result = user.result_type(windowed, constants)
        except SqlError as exc:
            raise self.where.error(exc.message, e.pos, exc.hint) from None
        for call in self.window_calls:
            if call.partition.sql != partition.sql:
                raise self.where.error(
                    "every call OVER a window in a query needs the same PARTITION BY", over.partition.pos
                )
            if call.function is user and call.arguments == tuple(args) and call.rows == rows:
                return Typed(quote(f"__win{call.index}"), call.result_type)
        index = len(self.window_calls)
        self.window_calls.append(WindowCall(index, user, tuple(args), result, partition, rows, over.pos))
        return Typed(quote(f"__win{index}"), result)

    def _user_call(self, user: UserFunction, e: ast.FunctionCall, args: list[Typed]) -> Typed:
        arg_types = [a.type for a in args]
        constants = [a.value if a.is_constant else None for a in args]
        try:
            user.check_arguments(arg_types)
            result = user.result_type(arg_types, constants)
        except SqlError as exc:
            raise self.where.error(exc.message, e.pos, exc.hint) from None
        declared = list(user.params) if user.params is not None else arg_types
        cast_args = [
            a.sql if a.type == t else f"CAST({a.sql} AS {t.to_duckdb() if t.name != 'NULL' else 'VARCHAR'})"
            for a, t in zip(args, declared, strict=True)
        ]
        row_ids = user.rejects and self.row_id is not None
        if row_ids:
            declared, cast_args = [BIGINT, *declared], [str(self.row_id), *cast_args]
        name = user.duckdb_name(declared, result)
        known = self.udf_uses[name].constants if name in self.udf_uses else frozenset()
        self.udf_uses[name] = UdfUse(user, tuple(declared), result, name, row_ids, known | {tuple(constants)})
        call = f"{name}({', '.join(cast_args)})"
        self.udf_calls.append(call)
        return Typed(call, result)


def _literal_kind(value: Any) -> str:
    """The parser's literal kind of a stored constant."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer" if -(2**31) <= value < 2**31 else "bigint"
    return "double" if isinstance(value, float) else "string"


_INTEGER = re.compile(r"[+-]?[0-9]+")


def coerce_literal(value: Typed, other: SqlType) -> Typed:
    """ksqlDB's literal rules: a STRING literal holding a number meets a number as that number, and any other
    literal meets a STRING as its text (``n = '1'``, ``s IN (1, 2)``); everything else is left as it is."""
    if not value.is_constant or value.value is None:
        return value
    if isinstance(value.value, str) and other.is_numeric and other.name != "NULL":
        text = value.value.strip()
        if _INTEGER.fullmatch(text):
            whole = int(text)
            t = INTEGER if other.name == "INTEGER" and -(2**31) <= whole < 2**31 else BIGINT
            return Typed(f"CAST({whole} AS {t.to_duckdb()})", t, whole)
        try:
            number = float(text)
        except ValueError:
            return value
        return Typed(f"CAST({number!r} AS DOUBLE)", DOUBLE, number)
    if other.is_string and not isinstance(value.value, str):
        text = str(value.value).lower() if isinstance(value.value, bool) else str(value.value)
        return Typed(sql_string(text), STRING, text)
    return value
