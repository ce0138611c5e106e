"""Planning of joins: stream-table (latest row per table key), stream-stream (WITHIN window buffers) and
table-table (the latest row per key of both tables, joined on their primary keys)."""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING, Any

from streamml.sql import ast
from streamml.sql.catalog import TABLE, Source
from streamml.sql.compiler import ExpressionCompiler, Scope, ScopeColumn, quote
from streamml.sql.functions import Typed
from streamml.sql.plan import (
    DEFAULT_GRACE_MS,
    STREAM_STREAM_JOIN,
    STREAM_TABLE_JOIN,
    TABLE_TABLE_JOIN,
    JoinPlan,
    OutputColumn,
    PlanNode,
    QueryPlan,
)

if TYPE_CHECKING:
    from streamml.sql.analyzer import Analyzer


def plan_join(self: Analyzer, query: ast.Query, text: str) -> QueryPlan:
    """Plan a query with one JOIN: stream-table (table state) or stream-stream (WITHIN buffers)."""
    join = query.joins[0]
    left, lscope = self._source_scope(query.source, "l.")
    right, rscope = self._source_scope(join.relation, "r.")
    lq, rq = query.source.alias or left.name, join.relation.alias or right.name
    if lq.upper() == rq.upper():
        raise self._err("both sides of the join have the same name: give them aliases", join.relation.pos)
    if left.kind == TABLE and right.kind == TABLE:
        return _plan_table_join(self, query, text, (left, lq), (right, rq))
    if left.kind == TABLE:
        raise self._err("the left side of a join must be a stream", query.source.pos)
    scope = Scope(lscope.columns + rscope.columns)
    compiler = ExpressionCompiler(scope, self.udfs, self.text, aliases=self.catalog.functions)
    kind = STREAM_TABLE_JOIN if right.kind == TABLE else STREAM_STREAM_JOIN
    if join.kind in ("FULL", "RIGHT") and kind == STREAM_TABLE_JOIN:
        raise self._err(f"a stream-table join is INNER or LEFT, not {join.kind} OUTER", join.pos)
    if kind == STREAM_TABLE_JOIN and (join.within is not None or join.grace_ms is not None):
        raise self._err("WITHIN is only allowed for stream-stream joins", join.pos)
    if kind == STREAM_STREAM_JOIN:
        return _plan_stream_join(self, query, text, (left, lq), (right, rq), compiler)
    # ON must be <stream expression> = <table key>
    on = join.on
    if not (isinstance(on, ast.BinaryOp) and on.op == "="):
        raise self._err("a stream-table join needs ON <stream expression> = <table key column>", on.pos)
    left_sql: Typed | None = None
    key_col: ScopeColumn | None = None
    for a, b in ((on.left, on.right), (on.right, on.left)):
        if isinstance(b, ast.ColumnRef):
            col = scope.resolve(b, self.where)
            if col.sql.startswith("r.") and right.column(col.name) is not None and right.column(col.name).key:  # type: ignore[union-attr]
                candidate = compiler.compile(a)
                if "r." not in candidate.sql:
                    left_sql, key_col = candidate, col
                    break
    if left_sql is None or key_col is None:
        keys = ", ".join(c.name for c in right.key_columns)
        raise self._err(f"the join must be on the primary key of table '{right.name}' ({keys})", on.pos)
    if left_sql.type != key_col.type and not (left_sql.type.is_numeric and key_col.type.is_numeric):
        raise self._err(f"join key types differ: {left_sql.type} and {key_col.type}", on.pos)
    where = self._where_sql(query, compiler)
    items = self._expand(query, scope, [(left, lq), (right, rq)], compiler)
    outputs = _key_first(items, [left_sql.sql] + ([key_col.sql] if join.kind == "INNER" else []))
    select = [f"{i.typed.sql} AS {quote(i.name)}" for i in items]
    relation = (
        f"__input AS l {'LEFT ' if join.kind == 'LEFT' else ''}JOIN __table AS r ON {left_sql.sql} = {key_col.sql}"
    )
    main = self._main_sql(select, relation, where, compiler, "l.")
    node = PlanNode(
        f"{join.kind} JOIN",
        (f"stream {left.name} AS {lq} with table {right.name} AS {rq} on {left_sql.sql} = {key_col.sql}",),
        (
            self._source_node(left),
            PlanNode("TABLE STATE", (f"latest row per key of {right.name}",), (self._source_node(right),)),
        ),
    )
    if where:
        node = PlanNode("FILTER", (f"WHERE {where}",), (node,))
    node = PlanNode("PROJECT", tuple(select), (node,))
    plan_join = JoinPlan(join.kind, right, rq, left_sql.sql, key_col.name)
    return QueryPlan(
        kind=kind,
        text=text,
        sources=(left, right),
        output=outputs,
        main_sql=main,
        where_sql=where,
        join=plan_join,
        udfs=tuple(compiler.udf_uses.values()),
        has_casts=bool(compiler.cast_checks),
        limit=query.limit,
        emit=query.emit,
        root=node,
    )


def _plan_stream_join(
    self: Analyzer,
    query: ast.Query,
    text: str,
    left: tuple[Source, str],
    right: tuple[Source, str],
    compiler: ExpressionCompiler,
) -> QueryPlan:
    join = query.joins[0]
    if join.within is None:
        raise self._err("a stream-stream join needs WITHIN", join.pos, "e.g. WITHIN 1 HOUR")
    on = compiler.predicate(join.on, "ON")
    where = self._where_sql(query, compiler)
    items = self._expand(query, Scope(), [left, right], compiler)
    key_sqls: list[str] = []
    if isinstance(join.on, ast.BinaryOp) and join.on.op == "=":
        sides = [compiler.compile(join.on.left).sql, compiler.compile(join.on.right).sql]
        lefts = [x for x in sides if "l." in x and "r." not in x]
        rights = [x for x in sides if "r." in x and "l." not in x]
        if len(lefts) == 1 and len(rights) == 1:
            # the key of a row: the side it surely has (a FULL join's row has one side or both)
            key_sqls = {"INNER": lefts + rights, "LEFT": lefts, "RIGHT": rights, "FULL": lefts + rights}[join.kind]
            if join.kind == "FULL":
                either = f"coalesce({lefts[0]}, {rights[0]})"
                items = [
                    replace(i, typed=replace(i.typed, sql=either)) if i.typed.sql in key_sqls else i for i in items
                ]
                key_sqls = [either]
    select = [f"{i.typed.sql} AS {quote(i.name)}" for i in items]
    before, after = join.within
    grace = join.grace_ms if join.grace_ms is not None else DEFAULT_GRACE_MS
    lt, rt = 'l."ROWTIME"', 'r."ROWTIME"'
    condition = f"{on.sql} AND {rt} BETWEEN {lt} - {before} AND {lt} + {after}"
    extra = [f"greatest({lt}, coalesce({rt}, {lt})) AS __rowtime"]
    casts = [f"CAST({c} AS INTEGER)" for c in compiler.cast_checks]
    if casts:
        extra.append(f"({' + '.join(casts)}) AS __cast_failures")
    tail = f" WHERE {where}" if where else ""
    # an unmatched record of an outer side is written at once with NULLs for the other side
    left_outer = "LEFT " if join.kind in ("LEFT", "FULL") else ""
    right_outer = "RIGHT " if join.kind in ("RIGHT", "FULL") else ""
    extra = [f"greatest(coalesce({lt}, {rt}), coalesce({rt}, {lt})) AS __rowtime", *extra[1:]]
    main = (
        f"SELECT {', '.join([*select, *extra, 'l.__row AS __row'])} "
        f"FROM __input AS l {left_outer}JOIN __right_buf AS r ON {condition}{tail}"
    )
    right_sql = (
        f"SELECT {', '.join([*select, *extra, 'r.__row AS __row'])} "
        f"FROM __left_buf AS l {right_outer}JOIN __input AS r ON {condition}{tail}"
    )
    node = PlanNode(
        f"{join.kind} JOIN",
        (
            f"stream {left[0].name} AS {left[1]} with stream {right[0].name} AS {right[1]} on {on.sql}",
            f"within {before} ms before and {after} ms after, grace {grace} ms; both sides buffered",
        ),
        (self._source_node(left[0]), self._source_node(right[0])),
    )
    if where:
        node = PlanNode("FILTER", (f"WHERE {where}",), (node,))
    node = PlanNode("PROJECT", tuple(select), (node,))
    return QueryPlan(
        kind=STREAM_STREAM_JOIN,
        text=text,
        sources=(left[0], right[0]),
        output=_key_first(items, key_sqls),
        main_sql=main,
        where_sql=where,
        join=JoinPlan(join.kind, right[0], right[1], on.sql, "", join.within, right_sql, grace),
        udfs=tuple(compiler.udf_uses.values()),
        has_casts=bool(compiler.cast_checks),
        limit=query.limit,
        emit=query.emit,
        root=node,
    )


def _plan_table_join(
    self: Analyzer, query: ast.Query, text: str, left: tuple[Source, str], right: tuple[Source, str]
) -> QueryPlan:
    """``table JOIN table ON l.pk = r.pk`` (INNER, LEFT, RIGHT, FULL): whenever a key changes on either side,
    its joined row, or a tombstone when the join has no row for it any more."""
    join = query.joins[0]
    (ls, lq), (rs, rq) = left, right
    if join.within is not None:
        raise self._err("WITHIN is only allowed for stream-stream joins", join.pos)
    if len(ls.key_columns) != 1 or len(rs.key_columns) != 1:
        raise self._err("a table-table join needs tables with one PRIMARY KEY column each", join.pos)
    scope = Scope()  # the tables' columns only: a table's row has no single ROWTIME or offset
    for source, qualifier, prefix in ((ls, lq, "l."), (rs, rq, "r.")):
        for c in source.columns:
            scope.add(ScopeColumn(c.name, c.type, prefix + quote(c.name), qualifier))
    compiler = ExpressionCompiler(scope, self.udfs, self.text, aliases=self.catalog.functions)
    lk, rk = (f"{p}{quote(s.key_columns[0].name)}" for p, s in (("l.", ls), ("r.", rs)))
    on = compiler.predicate(join.on, "ON")
    if on.sql not in (f"({lk} = {rk})", f"({rk} = {lk})"):
        raise self._err("a table-table join is ON the primary keys of both tables", join.on.pos,
                        f"write ON {lq}.{ls.key_columns[0].name} = {rq}.{rs.key_columns[0].name}")  # fmt: skip
    if ls.key_columns[0].type != rs.key_columns[0].type:
        raise self._err("the primary keys of the joined tables need the same type", join.on.pos)
    where = self._where_sql(query, compiler)
    items = self._expand(query, scope, [left, right], compiler)
    outputs = _key_first(items, [lk, rk])
    key = next((o for o in outputs if o.key), None)
    if key is None:
        raise self._err("select the join key (a table's rows are keyed by it)", query.pos,
                        f"add {lq}.{ls.key_columns[0].name} to the SELECT")  # fmt: skip
    present = {"INNER": f"{lk} IS NOT NULL AND {rk} IS NOT NULL", "LEFT": f"{lk} IS NOT NULL",
               "RIGHT": f"{rk} IS NOT NULL", "FULL": f"({lk} IS NOT NULL OR {rk} IS NOT NULL)"}[join.kind]  # fmt: skip
    row = f"coalesce({present}{f' AND ({where})' if where else ''}, FALSE)"
    by_name = {i.name: i for i in items}
    select = [f"{'t.__k' if o.key else by_name[o.name].typed.sql} AS {quote(o.name)}" for o in outputs]
    joined = f"FROM __touched AS t LEFT JOIN __left AS l ON {lk} = t.__k LEFT JOIN __right AS r ON {rk} = t.__k"
    main = f"SELECT {', '.join([*select, 't.__ts AS __rowtime'])} {joined} WHERE {row}"
    gone = f"SELECT t.__k AS {quote(key.name)}, t.__ts AS __rowtime {joined} WHERE NOT {row}"
    node = PlanNode(
        f"{join.kind} JOIN",
        (f"table {ls.name} AS {lq} with table {rs.name} AS {rq} on their keys; both tables kept as state",),
        (self._source_node(ls), self._source_node(rs)),
    )
    return QueryPlan(
        kind=TABLE_TABLE_JOIN,
        text=text,
        sources=(ls, rs),
        output=outputs,
        main_sql=main,
        where_sql=where,
        join=JoinPlan(join.kind, rs, rq, lk, rs.key_columns[0].name, right_sql=gone),
        udfs=tuple(compiler.udf_uses.values()),
        has_casts=False,
        limit=query.limit,
        emit=query.emit,
        root=PlanNode("PROJECT", tuple(select), (node,)),
    )


def _key_first(items: list[Any], key_sqls: list[str]) -> tuple[OutputColumn, ...]:
    """Outputs; the first item that projects the join key becomes the key column, first (as in ksqlDB)."""
    outputs = [OutputColumn(i.name, i.typed.type) for i in items]
    index = next((j for j, i in enumerate(items) if i.typed.sql in key_sqls), None)
    if index is None:
        return tuple(outputs)
    key = OutputColumn(outputs[index].name, outputs[index].type, key=True)
    return (key, *outputs[:index], *outputs[index + 1 :])
