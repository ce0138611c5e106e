"""Parse KSQL text into statements (:mod:`streamml.sql.ast`), with readable syntax errors.

>>> [s.name for s in parse("CREATE STREAM a (x INT) WITH (KAFKA_TOPIC='a', VALUE_FORMAT='JSON'); DROP STREAM a;")]
['A', 'A']
"""

from __future__ import annotations

from dataclasses import replace
from functools import cache
from importlib import resources
from typing import Any

from lark import Lark, Token, Transformer, Tree, v_args
from lark.exceptions import UnexpectedInput, VisitError

from streamml.errors import SqlError
from streamml.sql import ast
from streamml.sql.syntax_errors import syntax_error
from streamml.sql.types import SqlType

_UNITS_MS = {
    "MILLISECOND": 1,
    "MILLISECONDS": 1,
    "SECOND": 1000,
    "SECONDS": 1000,
    "MINUTE": 60_000,
    "MINUTES": 60_000,
    "HOUR": 3_600_000,
    "HOURS": 3_600_000,
    "DAY": 86_400_000,
    "DAYS": 86_400_000,
}


@cache
def _parser() -> Lark:
    grammar = resources.files("streamml.sql").joinpath("grammar.lark").read_text(encoding="utf-8")
    return Lark(
        grammar,
        parser="lalr",
        start=["start", "type_only"],
        propagate_positions=True,
        maybe_placeholders=False,
    )


def parse(text: str) -> list[ast.Statement]:
    """Parse one or more ``;``-separated statements. Each keeps its own text and start position."""
    tree = _run(text, "start")
    statements: list[ast.Statement] = []
    for child in tree.children:
        try:
            statement = _Builder().transform(child)
        except VisitError as exc:
            if isinstance(exc.orig_exc, SqlError):
                raise _locate(exc.orig_exc, text) from None
            raise
        meta = child.meta
        statement.text = text[meta.start_pos : meta.end_pos]
        statement.pos = ast.Pos(meta.line, meta.column)
        if isinstance(statement, ast.Explain) and statement.statement is not None:
            inner = child.children[1].meta if len(child.children) > 1 else None
            if inner is not None and not inner.empty:
                statement.statement.text = text[inner.start_pos : inner.end_pos]
                statement.statement.pos = ast.Pos(inner.line, inner.column)
        statements.append(statement)
    return statements


def parse_statement(text: str) -> ast.Statement:
    """Parse exactly one statement."""
    statements = parse(text)
    if len(statements) != 1:
        raise SqlError(f"expected one statement, found {len(statements)}", statement=text)
    return statements[0]


def parse_type(text: str) -> SqlType:
    """Parse a type such as ``STRUCT<a INT, b ARRAY<STRING>>``."""
    tree = _run(text, "type_only")
    try:
        result: SqlType = _Builder().transform(tree.children[0])
    except VisitError as exc:
        if isinstance(exc.orig_exc, SqlError):
            raise _locate(exc.orig_exc, text) from None
        raise
    return result


def _locate(error: SqlError, text: str) -> SqlError:
    error.statement = text
    return error


def _run(text: str, start: str) -> Tree:
    try:
        return _parser().parse(text, start=start)
    except UnexpectedInput as exc:
        raise syntax_error(exc, text) from None


def _pos(item: Any) -> ast.Pos:
    if isinstance(item, Token):
        return ast.Pos(item.line or 0, item.column or 0)
    if isinstance(item, Tree) and not item.meta.empty:
        return ast.Pos(item.meta.line, item.meta.column)
    return ast.NOWHERE


def _unquote_string(token: str) -> str:
    return token[1:-1].replace("''", "'")


def _is_token(item: Any, kind: str) -> bool:
    return isinstance(item, Token) and item.type == kind


class _Ident(str):
    """An identifier with its position (behaves as a plain ``str``)."""

    pos: ast.Pos

    def __new__(cls, value: str, pos: ast.Pos) -> _Ident:
        obj = super().__new__(cls, value)
        obj.pos = pos
        return obj


@v_args(inline=True)
class _Builder(Transformer):
    """Lark tree -> :mod:`streamml.sql.ast`."""

    # ---- identifiers and literals -----------------------------------------------------------------------
    def plain_ident(self, token: Token) -> _Ident:
        return _Ident(str(token).upper(), _pos(token))

    def quoted_ident(self, token: Token) -> _Ident:
        quote = token[0]
        return _Ident(token[1:-1].replace(quote * 2, quote), _pos(token))

    def string(self, token: Token) -> ast.Literal:
        return ast.Literal(value=_unquote_string(token), kind="string", pos=_pos(token))

    def number(self, token: Token) -> ast.Literal:
        text = str(token)
        if any(c in text for c in ".eE"):
            return ast.Literal(value=float(text), kind="double", pos=_pos(token))
        value = int(text)
        return ast.Literal(value=value, kind="integer" if value < 2**31 else "bigint", pos=_pos(token))

    def true(self, token: Token) -> ast.Literal:
        return ast.Literal(value=True, kind="boolean", pos=_pos(token))

    def false(self, token: Token) -> ast.Literal:
        return ast.Literal(value=False, kind="boolean", pos=_pos(token))

    def null(self, token: Token) -> ast.Literal:
        return ast.Literal(value=None, kind="null", pos=_pos(token))

    # ---- types -----------------------------------------------------------------------------------------
    def simple_type(self, name: _Ident) -> SqlType:
        if name in ("DECIMAL", "ARRAY", "MAP", "STRUCT"):
            raise SqlError(f"type {name} needs parameters", line=name.pos.line, column=name.pos.column)
        try:
            return SqlType.primitive(name)
        except SqlError as exc:
            exc.line, exc.column = name.pos.line, name.pos.column
            raise

    def param_type(self, name: _Ident, *numbers: Token) -> SqlType:
        if name != "DECIMAL" or len(numbers) != 2:
            if name in ("VARCHAR", "STRING") and len(numbers) == 1:
                return SqlType("STRING")
            raise SqlError(f"type {name} takes no such parameters", line=name.pos.line, column=name.pos.column)
        return SqlType.decimal(int(numbers[0]), int(numbers[1]))

    def _expect(self, name: _Ident, wanted: str) -> None:
        if name != wanted:
            raise SqlError(f"unknown type '{name}<...>'", line=name.pos.line, column=name.pos.column)

    def array_type(self, name: _Ident | Token, _lt: Token, element: SqlType, _gt: Token) -> SqlType:
        if isinstance(name, _Ident):
            self._expect(name, "ARRAY")
        return SqlType.array(element)

    def map_type(self, name: _Ident, _lt: Token, key: SqlType, value: SqlType, _gt: Token) -> SqlType:
        self._expect(name, "MAP")
        return SqlType.map(key, value)

    def struct_type(self, name: _Ident, *parts: Any) -> SqlType:
        self._expect(name, "STRUCT")
        return SqlType.struct([p for p in parts if isinstance(p, tuple)])

    def field(self, name: _Ident, type_: SqlType) -> tuple[str, SqlType]:
        return (str(name), type_)

    # ---- expressions ------------------------------------------------------------------------------------
    def column_ref(self, first: _Ident, second: _Ident | None = None) -> ast.ColumnRef:
        if second is None:
            return ast.ColumnRef(name=str(first), pos=first.pos)
        return ast.ColumnRef(name=str(second), qualifier=str(first), pos=first.pos)

    def call(self, name: _Ident, *args: ast.Expr) -> ast.FunctionCall:
        return ast.FunctionCall(name=str(name), args=tuple(args), pos=name.pos)

    def call_star(self, name: _Ident) -> ast.FunctionCall:
        return ast.FunctionCall(name=str(name), star=True, pos=name.pos)

    def or_(self, left: ast.Expr, op: Token, right: ast.Expr) -> ast.Expr:
        return ast.BinaryOp(op="OR", left=left, right=right, pos=left.pos)

    def and_(self, left: ast.Expr, op: Token, right: ast.Expr) -> ast.Expr:
        return ast.BinaryOp(op="AND", left=left, right=right, pos=left.pos)

    def not_(self, op: Token, operand: ast.Expr) -> ast.Expr:
        return ast.UnaryOp(op="NOT", operand=operand, pos=_pos(op))

    def neg(self, op: Token, operand: ast.Expr) -> ast.Expr:
        if str(op) == "+":
            return operand
        if isinstance(operand, ast.Literal) and operand.kind in ("integer", "bigint", "double"):
            return ast.Literal(value=-operand.value, kind=operand.kind, pos=_pos(op))
        return ast.UnaryOp(op="-", operand=operand, pos=_pos(op))

    def binop(self, left: ast.Expr, op: Token, right: ast.Expr) -> ast.Expr:
        return ast.BinaryOp(op=str(op), left=left, right=right, pos=_pos(op))

    def compare(self, left: ast.Expr, op: Token, right: ast.Expr) -> ast.Expr:
        text = "!=" if str(op) == "<>" else str(op)
        return ast.BinaryOp(op=text, left=left, right=right, pos=_pos(op))

    def not_opt(self, *tokens: Token) -> bool:
        return bool(tokens)

    def is_null(self, operand: ast.Expr, _is: Token, negated: bool, _null: Token) -> ast.Expr:
        return ast.IsNull(operand=operand, negated=negated, pos=_pos(_is))

    def is_distinct(
        self, left: ast.Expr, _is: Token, negated: bool, _distinct: Token, _from: Token, right: ast.Expr
    ) -> ast.Expr:
        op = "IS NOT DISTINCT FROM" if negated else "IS DISTINCT FROM"
        return ast.BinaryOp(op=op, left=left, right=right, pos=_pos(_is))

    def entry(self, key: ast.Expr, value: ast.Expr) -> tuple[ast.Expr, ast.Expr]:
        return (key, value)

    def constructor(self, name: _Ident, *entries: tuple[ast.Expr, ast.Expr]) -> ast.Expr:
        kind = str(name).upper()
        if kind == "MAP":
            return ast.Constructor(kind=kind, keys=tuple(k for k, _ in entries), values=tuple(v for _, v in entries),
                                   pos=name.pos)  # fmt: skip
        if kind != "STRUCT":
            raise SqlError(f"'name := value' arguments build a STRUCT or a MAP, not {name}(...)",
                           line=name.pos.line, column=name.pos.column)  # fmt: skip
        fields = []
        for key, _ in entries:
            if not isinstance(key, ast.ColumnRef) or key.qualifier is not None:
                raise SqlError("a STRUCT field is named by an identifier: STRUCT(name := value, ...)",
                               line=key.pos.line, column=key.pos.column)  # fmt: skip
            fields.append(key.name)
        return ast.Constructor(kind=kind, keys=tuple(fields), values=tuple(v for _, v in entries), pos=name.pos)

    def array_constructor(self, kw: Token, *items: ast.Expr) -> ast.Expr:
        return ast.Constructor(kind="ARRAY", values=tuple(items), pos=_pos(kw))

    def in_list(self, operand: ast.Expr, negated: bool, _in: Token, *items: ast.Expr) -> ast.Expr:
        return ast.InList(operand=operand, items=tuple(items), negated=negated, pos=_pos(_in))

    def between(
        self, operand: ast.Expr, negated: bool, kw: Token, low: ast.Expr, _and: Token, high: ast.Expr
    ) -> ast.Expr:
        return ast.Between(operand=operand, low=low, high=high, negated=negated, pos=_pos(kw))

    def like(self, operand: ast.Expr, negated: bool, kw: Token, pattern: ast.Expr) -> ast.Expr:
        return ast.Like(operand=operand, pattern=pattern, negated=negated, pos=_pos(kw))

    def when(self, _when: Token, cond: ast.Expr, _then: Token, result: ast.Expr) -> tuple[ast.Expr, ast.Expr]:
        return (cond, result)

    def else_(self, _else: Token, result: ast.Expr) -> tuple[str, ast.Expr]:
        return ("ELSE", result)

    def case(self, kw: Token, *parts: Any) -> ast.Expr:
        whens = tuple(p for p in parts if not _is_token(p, "END") and p[0] != "ELSE")
        else_ = next((p[1] for p in parts if isinstance(p, tuple) and p[0] == "ELSE"), None)
        return ast.Case(whens=whens, else_=else_, pos=_pos(kw))

    def simple_case(self, kw: Token, operand: ast.Expr, *parts: Any) -> ast.Expr:
        whens = tuple(
            (ast.BinaryOp(op="=", left=operand, right=c, pos=c.pos), r)
            for c, r in (p for p in parts if not _is_token(p, "END") and p[0] != "ELSE")
        )
        else_ = next((p[1] for p in parts if isinstance(p, tuple) and p[0] == "ELSE"), None)
        return ast.Case(whens=whens, else_=else_, pos=_pos(kw))

    def cast(self, kw: Token, operand: ast.Expr, _as: Token, target: SqlType) -> ast.Expr:
        return ast.Cast(operand=operand, target=target, pos=_pos(kw))

    def deref(self, base: ast.Expr, _arrow: Token, name: _Ident) -> ast.Expr:
        return ast.Dereference(base=base, field=str(name), pos=name.pos)

    def subscript(self, base: ast.Expr, index: ast.Expr) -> ast.Expr:
        return ast.Subscript(base=base, index=index, pos=base.pos)

    def over(self, base: ast.Expr, kw: Token, _p: Token, _b: Token, partition: ast.Expr, rows: Any = None) -> ast.Expr:
        if not isinstance(base, ast.FunctionCall) or base.over is not None:
            raise SqlError("OVER (...) must follow a function call", line=kw.line, column=kw.column)
        return replace(base, over=ast.Over(partition=partition, rows=rows, pos=_pos(kw)))

    def frame(self, *parts: Token) -> int:
        number = next(p for p in parts if p.type == "NUMBER")
        text = str(number)
        if not text.isdigit():
            raise SqlError(
                f"ROWS {text} PRECEDING: expected a whole number of rows", line=number.line, column=number.column
            )
        return int(text) + 1

    # ---- queries ----------------------------------------------------------------------------------------
    def star(self) -> ast.SelectItem:
        return ast.SelectItem(expr=None)

    def qualified_star(self, qualifier: _Ident) -> ast.SelectItem:
        return ast.SelectItem(expr=None, star_qualifier=str(qualifier), pos=qualifier.pos)

    def select_expr(self, expr: ast.Expr, *rest: Any) -> ast.SelectItem:
        alias = next((str(r) for r in rest if isinstance(r, _Ident)), None)
        return ast.SelectItem(expr=expr, alias=alias, pos=expr.pos)

    def select_items(self, *items: ast.SelectItem) -> tuple[ast.SelectItem, ...]:
        return items

    def relation(self, name: _Ident, *rest: Any) -> ast.Relation:
        alias = next((str(r) for r in rest if isinstance(r, _Ident)), None)
        return ast.Relation(name=str(name), alias=alias, pos=name.pos)

    def duration(self, number: Token, unit: _Ident) -> int:
        factor = _UNITS_MS.get(unit)
        if factor is None:
            raise SqlError(
                f"unknown time unit '{unit}'",
                line=unit.pos.line,
                column=unit.pos.column,
                hint="use MILLISECONDS, SECONDS, MINUTES, HOURS or DAYS",
            )
        return int(float(number) * factor)

    def within(self, _kw: Token, *args: Any) -> tuple[int, int, int | None]:
        grace = next((a[1] for a in args if isinstance(a, tuple)), None)
        durations = [a for a in args if isinstance(a, int)]
        return (durations[0], durations[-1], grace)

    def join_grace(self, _g: Token, _p: Token, duration: int) -> tuple[str, int]:
        return ("GRACE", duration)

    def join_type(self, *tokens: Token) -> str:
        words = {str(t).upper() for t in tokens}
        return next((kind for kind in ("LEFT", "RIGHT", "FULL") if kind in words), "INNER")

    def join(self, kind: str, _join: Token, relation: ast.Relation, *rest: Any) -> ast.Join:
        within = next((r for r in rest if isinstance(r, tuple)), None)
        on = rest[-1]
        return ast.Join(
            kind=kind,
            relation=relation,
            on=on,
            within=within[:2] if within else None,
            grace_ms=within[2] if within else None,
            pos=_pos(_join),
        )

    def from_clause(self, relation: ast.Relation, *joins: ast.Join) -> tuple[ast.Relation, tuple[ast.Join, ...]]:
        return (relation, joins)

    def grace(self, _g: Token, _p: Token, duration: int) -> tuple[str, int]:
        return ("GRACE", duration)

    def tumbling(self, kw: Token, _size: Token, size: int, grace: tuple[str, int] | None = None) -> ast.WindowSpec:
        return ast.WindowSpec(kind="TUMBLING", size_ms=size, grace_ms=grace[1] if grace else None, pos=_pos(kw))

    def hopping(
        self, kw: Token, _size: Token, size: int, _adv: Token, _by: Token, advance: int, grace: Any = None
    ) -> ast.WindowSpec:
        if advance <= 0 or advance > size:
            raise SqlError("ADVANCE BY must be positive and not larger than SIZE", line=kw.line, column=kw.column)
        return ast.WindowSpec(
            kind="HOPPING", size_ms=size, advance_ms=advance, grace_ms=grace[1] if grace else None, pos=_pos(kw)
        )

    def session(self, kw: Token, gap: int, grace: tuple[str, int] | None = None) -> ast.WindowSpec:
        return ast.WindowSpec(kind="SESSION", size_ms=gap, grace_ms=grace[1] if grace else None, pos=_pos(kw))

    def window_clause(self, _kw: Token, spec: ast.WindowSpec) -> tuple[str, Any]:
        return ("window", spec)

    def where_clause(self, _kw: Token, expr: ast.Expr) -> tuple[str, Any]:
        return ("where", expr)

    def group_by(self, _g: Token, _b: Token, *exprs: ast.Expr) -> tuple[str, Any]:
        return ("group_by", exprs)

    def partition_by(self, _p: Token, _b: Token, *exprs: ast.Expr) -> tuple[str, Any]:
        return ("partition_by", exprs)

    def having(self, _kw: Token, expr: ast.Expr) -> tuple[str, Any]:
        return ("having", expr)

    def emit(self, _kw: Token, what: Token) -> tuple[str, Any]:
        return ("emit", str(what).upper())

    def limit(self, _kw: Token, number: Token) -> tuple[str, Any]:
        return ("limit", int(number))

    def query(
        self, kw: Token, items: tuple[ast.SelectItem, ...], _from: Token, source: Any, *clauses: Any
    ) -> ast.Query:
        relation, joins = source
        return ast.Query(select=items, source=relation, joins=joins, pos=_pos(kw), **dict(clauses))

    # ---- statements -------------------------------------------------------------------------------------
    def source_kind(self, token: Token) -> str:
        return str(token).upper()

    def or_replace(self, *tokens: Token) -> bool:
        return bool(tokens)

    if_not_exists = or_replace
    if_exists = or_replace
    delete_topic = or_replace
    extended = or_replace

    def key_marker(self, *tokens: Token) -> str:
        return "PRIMARY" if len(tokens) == 2 else "KEY"

    def col_def(self, name: _Ident, type_: SqlType, marker: str | None = None) -> ast.ColumnDef:
        return ast.ColumnDef(
            name=str(name), type=type_, key=marker is not None, primary_key=marker == "PRIMARY", pos=name.pos
        )

    def prop(self, name: _Ident, _eq: Token, value: ast.Literal) -> tuple[str, Any]:
        return (str(name).upper(), value.value)

    def with_clause(self, _kw: Token, *props: tuple[str, Any]) -> dict[str, Any]:
        return dict(props)

    def create_source(
        self, _c: Token, replace: bool, kind: str, if_not: bool, name: _Ident, *rest: Any
    ) -> ast.Statement:
        columns = [r for r in rest if isinstance(r, ast.ColumnDef)]
        props = next((r for r in rest if isinstance(r, dict)), {})
        return ast.CreateSource(
            kind=kind, name=str(name), columns=columns, properties=props, or_replace=replace, if_not_exists=if_not
        )

    def create_as(self, _c: Token, replace: bool, kind: str, if_not: bool, name: _Ident, *rest: Any) -> ast.Statement:
        props = next((r for r in rest if isinstance(r, dict)), {})
        return ast.CreateAsSelect(
            kind=kind, name=str(name), query=rest[-1], properties=props, or_replace=replace, if_not_exists=if_not
        )

    def create_function(
        self, _c: Token, replace: bool, _f: Token, if_not: bool, name: _Ident, _as: Token, body: ast.Expr
    ) -> ast.Statement:
        return ast.CreateFunction(name=str(name), body=body, or_replace=replace, if_not_exists=if_not)

    def drop_function(self, _d: Token, _f: Token, if_exists: bool, name: _Ident) -> ast.Statement:
        return ast.DropFunction(name=str(name), if_exists=if_exists)

    def create_monitor(self, _c: Token, _m: Token, if_not: bool, name: _Ident, props: dict[str, Any]) -> ast.Statement:
        return ast.CreateMonitor(name=str(name), properties=props, if_not_exists=if_not)

    def drop_monitor(self, _d: Token, _m: Token, if_exists: bool, name: _Ident) -> ast.Statement:
        return ast.DropMonitor(name=str(name), if_exists=if_exists)

    def insert_into(self, _i: Token, _into: Token, name: _Ident, query: ast.Query) -> ast.Statement:
        return ast.InsertInto(target=str(name), query=query)

    def column_list(self, *names: _Ident) -> tuple[str, ...]:
        return tuple(str(n) for n in names)

    def insert_values(self, _i: Token, _into: Token, name: _Ident, *rest: Any) -> ast.Statement:
        columns = rest[0] if isinstance(rest[0], tuple) else ()
        values = tuple(r for r in rest if isinstance(r, ast.Expr))
        return ast.InsertValues(target=str(name), columns=columns, values=values)

    def drop(self, _d: Token, kind: str, if_exists: bool, name: _Ident, delete_topic: bool) -> ast.Statement:
        return ast.DropSource(kind=kind, name=str(name), if_exists=if_exists, delete_topic=delete_topic)

    def show_what(self, token: Token) -> str:
        return str(token).upper()

    def show(self, _kw: Token, what: str) -> ast.Statement:
        return ast.Show(what=what)

    def describe(self, _kw: Token, name: _Ident, extended: bool) -> ast.Statement:
        return ast.Describe(name=str(name), extended=extended)

    def describe_function(self, _kw: Token, _f: Token, name: _Ident) -> ast.Statement:
        return ast.DescribeFunction(name=str(name))

    def terminate(self, _kw: Token, target: Any) -> ast.Statement:
        return ast.Terminate(query_id=None if _is_token(target, "ALL") else str(target))

    def explain(self, _kw: Token, target: Any) -> ast.Statement:
        if isinstance(target, ast.Statement):
            return ast.Explain(statement=target)
        return ast.Explain(query_id=str(target))

    def set_prop(self, _kw: Token, key: Token, _eq: Token, value: Token) -> ast.Statement:
        return ast.SetProperty(key=_unquote_string(key), value=_unquote_string(value))

    def select_statement(self, query: ast.Query) -> ast.Statement:
        return ast.SelectStatement(query=query)

    def unset_prop(self, _kw: Token, key: Token) -> ast.Statement:
        return ast.UnsetProperty(key=_unquote_string(key))
