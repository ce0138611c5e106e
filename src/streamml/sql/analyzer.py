"""Semantic analysis: statements + catalog -> sources (DDL) and :class:`QueryPlan` (queries).

Names resolve case-insensitively; unknown streams, columns and functions, type mismatches and unsupported
shapes raise :class:`SqlError` with line, column and a suggestion.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from streamml.errors import SqlError
from streamml.sql import ast
from streamml.sql.catalog import PSEUDO_COLUMNS, STREAM, TABLE, WINDOW_COLUMNS, Catalog, Column, Source, suggest
from streamml.sql.compiler import (
    AggregateCall,
    ErrorSite,
    ExpressionCompiler,
    Scope,
    ScopeColumn,
    WindowCall,
    coerce_literal,
    event_time_sql,
    quote,
)
from streamml.sql.functions import AGGREGATES, Typed
from streamml.sql.joins_planner import plan_join
from streamml.sql.plan import (
    AGGREGATE,
    DEFAULT_GRACE_MS,
    SEQUENCE,
    STATELESS,
    STREAM_TABLE_JOIN,
    TABLE_TABLE_JOIN,
    AggregatePlan,
    OutputColumn,
    PlanNode,
    QueryPlan,
    SequencePlan,
    Sink,
    WindowPlan,
)
from streamml.sql.properties import check_source_properties, checked_properties
from streamml.sql.types import BIGINT, STRING, SqlType, common_type
from streamml.sql.udf import FunctionRegistry


def _contains_aggregate(expr: ast.Expr | None) -> bool:
    if expr is None:
        return False
    if isinstance(expr, ast.FunctionCall) and expr.name in AGGREGATES:
        return True
    for value in vars(expr).values():
        items = value if isinstance(value, tuple) else (value,)
        for item in items:
            if isinstance(item, ast.Expr) and _contains_aggregate(item):
                return True
            if isinstance(item, tuple) and any(isinstance(i, ast.Expr) and _contains_aggregate(i) for i in item):
                return True
    return False


def _sequence_plan(calls: list[WindowCall], where: str | None) -> SequencePlan | None:
    """The window step of a query with calls OVER a window of rows (``None`` without such calls)."""
    if not calls:
        return None
    arguments: dict[str, int] = {}
    for call in calls:
        for arg in call.arguments:
            if not arg.is_constant:
                arguments.setdefault(arg.sql, len(arguments))
    columns = [f"CAST({calls[0].partition.sql} AS VARCHAR) AS __wkey"]
    columns += [f"CAST({sql} AS DOUBLE) AS __wa{j}" for sql, j in arguments.items()]
    pre = f"SELECT *, {', '.join(columns)} FROM __input" + (f" WHERE {where}" if where else "")
    return SequencePlan(pre, tuple(calls), arguments)


def _sequence_node(plan: SequencePlan, child: PlanNode) -> PlanNode:
    details = [f"{call.label} -> __win{call.index} {call.result_type}" for call in plan.calls]
    details.append(f"state: the last {plan.history} rows of every key (changelog), per partition")
    return PlanNode("WINDOW ROWS", tuple(details), (child,))


def _auto_name(expr: ast.Expr, counter: list[int]) -> str:
    if isinstance(expr, ast.ColumnRef):
        return expr.name
    if isinstance(expr, ast.Dereference):
        return expr.field
    name = f"KSQL_COL_{counter[0]}"
    counter[0] += 1
    return name


@dataclass
class _Item:
    name: str
    typed: Typed
    expr: ast.Expr | None


class Analyzer:
    """Checks statements against a catalog and compiles queries into plans."""

    def __init__(self, catalog: Catalog, udfs: FunctionRegistry, text: str | None = None) -> None:
        self.catalog = catalog
        self.udfs = udfs
        self.text = text
        self.where = ErrorSite(text)

    def _err(self, message: str, pos: ast.Pos, hint: str | None = None) -> SqlError:
        return self.where.error(message, pos, hint)

    # ---- DDL --------------------------------------------------------------------------------------------
    def _properties(self, props: dict[str, Any], pos: ast.Pos) -> dict[str, Any]:
        return checked_properties(props, lambda message, hint: self._err(message, pos, hint))

    def create_source(self, stmt: ast.CreateSource) -> Source:
        """A new stream or table from ``CREATE STREAM|TABLE name (...) WITH (...)``."""
        props = self._properties(dict(stmt.properties), stmt.pos)
        if "KAFKA_TOPIC" not in props:
            raise self._err(f"missing KAFKA_TOPIC property for {stmt.kind.lower()} '{stmt.name}'", stmt.pos)
        if "VALUE_FORMAT" not in props and "FORMAT" not in props:
            raise self._err(f"missing VALUE_FORMAT property for {stmt.kind.lower()} '{stmt.name}'", stmt.pos)
        seen: set[str] = set()
        for c in stmt.columns:
            if c.name.upper() in seen:
                raise self._err(f"duplicate column '{c.name}'", c.pos)
            seen.add(c.name.upper())
            if stmt.kind == TABLE and c.key and not c.primary_key:
                raise self._err(f"tables declare keys with PRIMARY KEY, not KEY (column '{c.name}')", c.pos)
            if stmt.kind == STREAM and c.primary_key:
                raise self._err(f"streams declare keys with KEY, not PRIMARY KEY (column '{c.name}')", c.pos)
        if stmt.kind == TABLE and not any(c.key for c in stmt.columns):
            raise self._err(f"table '{stmt.name}' needs a PRIMARY KEY column", stmt.pos)
        columns = tuple(Column(c.name, c.type, c.key) for c in stmt.columns)
        return self._source(stmt.kind, stmt.name, columns, props, stmt.text, stmt.pos)

    def _source(
        self,
        kind: str,
        name: str,
        columns: tuple[Column, ...],
        props: dict[str, Any],
        text: str,
        pos: ast.Pos,
        **extra: Any,
    ) -> Source:
        by_name = {c.name.upper(): c.name for c in columns}

        def column_prop(key: str) -> str | None:
            if key not in props:
                return None
            value = str(props[key])
            resolved = by_name.get(value.upper().strip("`"))
            if resolved is None:
                raise self._err(f"{key}='{value}' names no column", pos, suggest(value, list(by_name.values())))
            return resolved

        fmt = props.get("FORMAT")
        check_source_properties(props, columns, lambda message, hint: self._err(message, pos, hint))
        return Source(
            name=name,
            kind=kind,
            columns=columns,
            topic=str(props.get("KAFKA_TOPIC", name)),
            value_format=str(props.get("VALUE_FORMAT", fmt or "JSON")),
            key_format=str(props.get("KEY_FORMAT", fmt or "KAFKA")),
            partitions=int(props["PARTITIONS"]) if "PARTITIONS" in props else None,
            replicas=int(props["REPLICAS"]) if "REPLICAS" in props else None,
            timestamp=column_prop("TIMESTAMP"),
            timestamp_format=props.get("TIMESTAMP_FORMAT"),
            value_delimiter=props.get("VALUE_DELIMITER"),
            key_field=column_prop("KEY"),
            properties=props,
            statement=text,
            **extra,
        )

    def create_as(self, stmt: ast.CreateAsSelect) -> tuple[Source, QueryPlan]:
        """The created source and the persistent query of ``CREATE STREAM|TABLE ... AS SELECT``."""
        props = self._properties(dict(stmt.properties), stmt.pos)
        plan = self.plan_query(stmt.query, stmt.text)
        if stmt.kind == TABLE and plan.kind not in (AGGREGATE, TABLE_TABLE_JOIN):
            raise self._err("CREATE TABLE AS SELECT needs a GROUP BY aggregation or a table-table join", stmt.query.pos)
        if stmt.kind == STREAM and plan.kind == AGGREGATE:
            raise self._err("an aggregation produces a table: use CREATE TABLE ... AS SELECT", stmt.pos)
        if stmt.kind == STREAM and plan.sources[0].kind == TABLE and plan.kind != STREAM_TABLE_JOIN:
            raise self._err("a query over a table produces a table: use CREATE TABLE ... AS SELECT", stmt.pos)
        first = plan.sources[0]
        props.setdefault("KAFKA_TOPIC", stmt.name)
        if "FORMAT" not in props:
            props.setdefault("VALUE_FORMAT", first.value_format)
            props.setdefault("KEY_FORMAT", first.key_format)
        if str(props.get("VALUE_FORMAT", "")).upper() == first.value_format.upper() and first.value_delimiter:
            props.setdefault("VALUE_DELIMITER", first.value_delimiter)  # the sink writes as its source reads
        if first.partitions:
            props.setdefault("PARTITIONS", first.partitions)
        columns = tuple(Column(c.name, c.type, c.key) for c in plan.output)
        source = self._source(stmt.kind, stmt.name, columns, props, stmt.text, stmt.pos, windowed=plan.windowed)
        plan.sink = Sink(
            source.name, source.kind, source.topic, source.key_format, source.value_format, source.partitions
        )
        plan.root = PlanNode(
            "SINK",
            (
                f"{source.kind} {source.name} -> topic '{source.topic}'",
                f"key format {source.key_format}, value format {source.value_format}",
            ),
            (plan.root,),
        )
        return source, plan

    def insert_into(self, stmt: ast.InsertInto) -> QueryPlan:
        target = self.catalog.get(stmt.target, line=stmt.pos.line, column=stmt.pos.column, statement=self.text)
        plan = self.plan_query(stmt.query, stmt.text)
        want = [(c.name, c.type) for c in target.columns]
        got = [(c.name, c.type) for c in plan.output]
        if sorted(want, key=str) != sorted(got, key=str):
            raise self._err(
                f"the query's columns do not match {target.kind.lower()} '{target.name}'",
                stmt.query.pos,
                "expected " + ", ".join(f"{n} {t}" for n, t in want),
            )
        plan.sink = Sink(
            target.name, target.kind, target.topic, target.key_format, target.value_format, target.partitions
        )
        plan.root = PlanNode("SINK", (f"INSERT INTO {target.name} -> topic '{target.topic}'",), (plan.root,))
        return plan

    def insert_values(self, stmt: ast.InsertValues) -> tuple[Source, str]:
        """The target of ``INSERT INTO ... VALUES`` and the SQL of its one row: every column of the target in
        order (NULL where not given), then ``ROWTIME`` when given (the record's timestamp)."""
        target = self.catalog.get(stmt.target, line=stmt.pos.line, column=stmt.pos.column, statement=self.text)
        columns = {c.name.upper(): c for c in target.columns}
        names = [n.upper() for n in stmt.columns] or [c.name.upper() for c in target.columns]
        if len(names) != len(stmt.values):
            raise self._err(f"{len(stmt.values)} values for {len(names)} columns", stmt.pos,
                            "give one value per column: INSERT INTO s (a, b) VALUES (1, 'x')")  # fmt: skip
        known = [*columns, "ROWTIME"]
        for name in names:
            if name not in known:
                raise self._err(f"'{target.name}' has no column '{name}'", stmt.pos, suggest(name, known))
        if len(set(names)) != len(names):
            raise self._err("a column is given twice", stmt.pos)
        compiler = ExpressionCompiler(Scope(), self.udfs, self.text, aliases=self.catalog.functions)
        given = dict(zip(names, stmt.values, strict=True))
        select = []
        for name, column_type in [*((c.name, c.type) for c in target.columns), ("ROWTIME", BIGINT)]:
            value = given.get(name.upper())
            if value is None:
                if name != "ROWTIME":
                    select.append(f"CAST(NULL AS {column_type.to_duckdb()}) AS {quote(name)}")
                continue
            typed = coerce_literal(compiler.compile(value), column_type)
            if typed.type.name != "NULL" and common_type([typed.type, column_type]) != column_type:
                raise self._err(f"column '{name}' is {column_type}, the value is {typed.type}", value.pos)
            select.append(f"CAST({typed.sql} AS {column_type.to_duckdb()}) AS {quote(name)}")
        return target, "SELECT " + ", ".join(select)

    # ---- queries ----------------------------------------------------------------------------------------
    def _source_scope(self, rel: ast.Relation, prefix: str) -> tuple[Source, Scope]:
        source = self.catalog.get(rel.name, line=rel.pos.line, column=rel.pos.column, statement=self.text)
        qualifier = rel.alias or source.name
        scope = Scope()
        for c in source.columns:
            scope.add(ScopeColumn(c.name, c.type, prefix + quote(c.name), qualifier))
        pseudo = dict(PSEUDO_COLUMNS)
        if not source.key_columns:
            pseudo["ROWKEY"] = STRING
        if source.windowed:
            pseudo.update(WINDOW_COLUMNS)
        for name, t in pseudo.items():
            if source.column(name) is None:
                scope.add(ScopeColumn(name, t, prefix + quote(name), qualifier))
        return source, scope

    @staticmethod
    def _event_time(source: Source, prefix: str) -> str:
        return event_time_sql(source, prefix) or prefix + quote("ROWTIME")

    def _expand(
        self, query: ast.Query, scope: Scope, sources: list[tuple[Source, str]], compiler: ExpressionCompiler
    ) -> list[_Item]:
        items: list[_Item] = []
        counter = [0]
        joined = len(sources) > 1
        for item in query.select:
            if item.is_star:
                for source, qualifier in sources:
                    if item.star_qualifier is not None and item.star_qualifier.upper() not in (
                        qualifier.upper(),
                        source.name.upper(),
                    ):
                        continue
                    for c in source.columns:
                        ref = ast.ColumnRef(name=c.name, qualifier=qualifier, pos=item.pos)
                        name = f"{qualifier}_{c.name}" if joined else c.name
                        items.append(_Item(name, compiler.compile(ref), ref))
                if item.star_qualifier is not None and not any(
                    item.star_qualifier.upper() in (q.upper(), s.name.upper()) for s, q in sources
                ):
                    raise self._err(f"unknown source alias '{item.star_qualifier}'", item.pos)
                continue
            assert item.expr is not None
            name = item.alias or _auto_name(item.expr, counter)
            items.append(_Item(name, compiler.compile(item.expr), item.expr))
        seen: set[str] = set()
        for it in items:
            if it.name in seen:
                raise self._err(f"duplicate output column '{it.name}'", query.pos, "give one of them an alias with AS")
            seen.add(it.name)
        return items

    def plan_query(self, query: ast.Query, text: str = "") -> QueryPlan:
        """Compile a query into a plan (no sink; see :meth:`create_as` and :meth:`insert_into`)."""
        if len(query.joins) > 1:
            raise self._err("only one JOIN per query is supported", query.joins[1].pos)
        if query.partition_by and (query.group_by or query.window):
            raise self._err("PARTITION BY cannot be combined with GROUP BY or WINDOW", query.partition_by[0].pos)
        aggregated = bool(query.group_by) or any(_contains_aggregate(i.expr) for i in query.select)
        if query.window is not None and not aggregated:
            raise self._err("WINDOW needs a GROUP BY aggregation", query.window.pos)
        if aggregated and query.joins:
            raise self._err("aggregations over joins are not supported yet", query.joins[0].pos)
        if aggregated and not query.group_by:
            raise self._err("aggregate functions need GROUP BY", query.pos)
        if query.having is not None and not aggregated:
            raise self._err("HAVING needs GROUP BY", query.having.pos)
        if query.emit == "FINAL" and query.window is None:
            raise self._err("EMIT FINAL is only for windowed aggregations", query.pos, "write EMIT CHANGES")
        if query.joins:
            return self._plan_join(query, text)
        if aggregated:
            return self._plan_aggregate(query, text)
        return self._plan_stateless(query, text)

    def _where_sql(self, query: ast.Query, compiler: ExpressionCompiler) -> str | None:
        if query.where is None:
            return None
        if _contains_aggregate(query.where):
            raise self._err("aggregate functions are not allowed in WHERE (use HAVING)", query.where.pos)
        return compiler.predicate(query.where, "WHERE").sql

    def _source_node(self, source: Source) -> PlanNode:
        return PlanNode(
            "SOURCE",
            (
                f"{source.kind} {source.name} <- topic '{source.topic}' ({source.value_format})",
                "columns: " + ", ".join(f"{c.name} {c.type}{' KEY' if c.key else ''}" for c in source.columns),
            ),
        )

    def _plan_stateless(self, query: ast.Query, text: str) -> QueryPlan:
        source, scope = self._source_scope(query.source, "")
        compiler = ExpressionCompiler(
            scope, self.udfs, self.text, row_id=quote("__row"), aliases=self.catalog.functions, windows=True
        )
        where = self._where_sql(query, compiler)
        if compiler.window_calls and query.where is not None:
            raise self._err(
                "calls OVER a window are not allowed in WHERE (it filters the rows the windows are made of)",
                query.where.pos,
                "filter their results in a query reading this one's output",
            )
        items = self._expand(query, scope, [(source, query.source.alias or source.name)], compiler)
        outputs = [OutputColumn(i.name, i.typed.type) for i in items]
        key_names: set[str] = set()
        node = self._source_node(source)
        if where is not None:
            node = PlanNode("FILTER", (f"WHERE {where}",), (node,))
        if query.partition_by:
            keys = [self._partition_item(expr, items, scope, compiler) for expr in query.partition_by]
            if None in keys and len(keys) > 1:
                raise self._err("PARTITION BY NULL cannot be combined with other expressions", query.pos)
            new = [k for k in keys if k is not None and k not in items]
            items[:0], outputs[:0] = new, [OutputColumn(k.name, k.typed.type) for k in new]
            key_names.update(k.name for k in keys if k is not None)
            rekey = ", ".join(k.typed.sql if k else "NULL" for k in keys)
            node = PlanNode("REKEY", (f"PARTITION BY {rekey}",), (node,))
        else:
            for it in items:
                if isinstance(it.expr, ast.ColumnRef):
                    col = source.column(it.expr.name)
                    if col is not None and col.key:
                        key_names.add(it.name)
        outputs = [OutputColumn(o.name, o.type, o.name in key_names) for o in outputs]
        rank = {k.name: i for i, k in enumerate(k for k in keys if k is not None)} if query.partition_by else {}
        order = sorted((o for o in outputs if o.key), key=lambda o: rank.get(o.name, 0)) + [
            o for o in outputs if not o.key
        ]
        by_name = {i.name: i for i in items}
        # plain column references are taken from the input batch in Arrow (zero copy when nothing is filtered)
        input_columns = {quote(c.name): c.name for c in scope.columns}
        passthrough = {
            o.name: input_columns[by_name[o.name].typed.sql]
            for o in order
            if by_name[o.name].typed.sql in input_columns
        }
        select = [f"{by_name[o.name].typed.sql} AS {quote(o.name)}" for o in order if o.name not in passthrough]
        if compiler.window_calls:
            self._check_window_key(source, compiler.window_calls[0])
        sequence = _sequence_plan(compiler.window_calls or [], where)
        if sequence is not None:
            node = _sequence_node(sequence, node)
        node = PlanNode("PROJECT", tuple(f"{o.name} := {by_name[o.name].typed.sql}" for o in order), (node,))
        main = self._main_sql(select, "__input", None if sequence else where, compiler, "")
        return QueryPlan(
            kind=SEQUENCE if sequence else STATELESS,
            sequence=sequence,
            passthrough=passthrough,
            text=text,
            sources=(source,),
            output=tuple(order),
            main_sql=main,
            where_sql=where,
            udfs=tuple(compiler.udf_uses.values()),
            has_casts=bool(compiler.cast_checks),
            limit=query.limit,
            emit=query.emit,
            root=node,
            no_key=bool(query.partition_by) and not key_names,
        )

    def _check_undoable(self, calls: list[AggregateCall], pos: ast.Pos) -> None:
        """Aggregating a table needs functions that can take a row back out (COUNT, SUM, AVG)."""
        for call in calls:
            arg_type = call.argument.type if call.argument is not None else BIGINT
            if any(p.undo is None for p in call.function.partials(arg_type)):
                raise self._err(f"{call.function.name} cannot take back a changed row, so it cannot aggregate a "
                                "TABLE", pos, "use COUNT, SUM or AVG, or aggregate the stream")  # fmt: skip

    def _check_window_key(self, source: Source, call: WindowCall) -> None:
        """A window's rows are the state of one input partition, so its key must be the record key: rows of
        one key all live in the same partition."""
        keys = [c.name for c in source.columns if c.key] or ["ROWKEY"]
        if call.partition.sql not in {quote(k) for k in keys}:
            raise self._err(
                f"OVER (PARTITION BY ...) must name the record key of {source.name} ({', '.join(keys)})",
                call.pos,
                "re-key the stream first: CREATE STREAM s2 AS SELECT ... FROM s PARTITION BY the_key",
            )

    def _partition_item(
        self, expr: ast.Expr, items: list[_Item], scope: Scope, compiler: ExpressionCompiler
    ) -> _Item | None:
        if isinstance(expr, ast.Literal) and expr.kind == "null":
            return None
        if isinstance(expr, ast.ColumnRef) and expr.qualifier is None:
            resolvable = any(c.name.upper() == expr.name.upper() for c in scope.columns)
            aliased = [i for i in items if i.name.upper() == expr.name.upper()]
            if aliased and (not resolvable or aliased[0].expr != expr):
                return aliased[0]  # PARTITION BY an output alias (accepted as in earlier KSQL versions)
        for it in items:
            if it.expr == expr:
                return it
        typed = compiler.compile(expr)
        return _Item(_auto_name(expr, [0]), typed, expr)

    @staticmethod
    def _main_sql(
        select: list[str], relation: str, where: str | None, compiler: ExpressionCompiler, prefix: str
    ) -> str:
        extra = [f"{prefix}{quote('ROWTIME')} AS __rowtime", f"{prefix}{quote('__row')} AS __row"]
        if compiler.cast_checks:
            extra.append(
                "(" + " + ".join(f"CAST({c} AS INTEGER)" for c in compiler.cast_checks) + ") AS __cast_failures"
            )
        columns = ", ".join(select + extra)
        repeated = sorted({c for c in compiler.udf_calls if compiler.udf_calls.count(c) > 1}, key=len, reverse=True)
        if repeated and not prefix:  # a user function called twice (SELECT and WHERE) is computed once per row
            computed = ", ".join(f"{call} AS {quote(f'__u{i}')}" for i, call in enumerate(repeated))
            for i, call in enumerate(repeated):
                columns = columns.replace(call, quote(f"__u{i}"))
                where = where.replace(call, quote(f"__u{i}")) if where else where
            relation = (
                f"(WITH __computed AS MATERIALIZED (SELECT *, {computed} FROM {relation}) SELECT * FROM __computed)"
            )
        sql = f"SELECT {columns} FROM {relation}"
        return sql + (f" WHERE {where}" if where else "")

    def _plan_aggregate(self, query: ast.Query, text: str) -> QueryPlan:
        source, scope = self._source_scope(query.source, "")
        if source.kind == TABLE and query.window is not None:
            raise self._err("a TABLE cannot be windowed: aggregate a stream", query.window.pos)
        plain = ExpressionCompiler(scope, self.udfs, self.text, aliases=self.catalog.functions)
        where = self._where_sql(query, plain)
        output_scope = Scope()
        if query.window is not None:
            for name, t in WINDOW_COLUMNS.items():
                output_scope.add(ScopeColumn(name, t, quote(name)))
        compiler = ExpressionCompiler(
            scope, self.udfs, self.text, group_by=list(query.group_by), output_scope=output_scope,
            aliases=self.catalog.functions,
        )  # fmt: skip
        for key_expr, key in zip(query.group_by, compiler.group_keys, strict=True):
            if key.type.name in ("ARRAY", "MAP", "STRUCT"):
                raise self._err(f"cannot GROUP BY a {key.type.name} value", key_expr.pos)
        items = self._expand(query, scope, [(source, query.source.alias or source.name)], compiler)
        having = compiler.predicate(query.having, "HAVING").sql if query.having is not None else None
        # key columns: group-by expressions, named after a matching select item or the column itself
        counter = [0]
        outputs: list[OutputColumn] = []
        select: list[str] = []
        matched: set[int] = set()
        for i, (key_expr, key) in enumerate(zip(query.group_by, compiler.group_keys, strict=True)):
            match = next((j for j, it in enumerate(items) if it.typed.sql == quote(f"__key{i}")), None)
            name = items[match].name if match is not None else _auto_name(key_expr, counter)
            if match is not None:
                matched.add(match)
            outputs.append(OutputColumn(name, key.type, key=True))
            select.append(f"{quote(f'__key{i}')} AS {quote(name)}")
        if query.window is not None:
            for name in WINDOW_COLUMNS:
                outputs.append(OutputColumn(name, BIGINT, key=True))
                select.append(quote(name))
        for j, it in enumerate(items):
            if j in matched or (it.name in WINDOW_COLUMNS and it.typed.sql == quote(it.name)):
                continue
            outputs.append(OutputColumn(it.name, it.typed.type))
            select.append(f"{it.typed.sql} AS {quote(it.name)}")
        extra = ["__rowtime"]
        main = f"SELECT {', '.join(select + extra)} FROM __agg_result" + (f" WHERE {having}" if having else "")
        pre = [f"{k.sql} AS {quote(f'__key{i}')}" for i, k in enumerate(compiler.group_keys)]
        pre += [f"{c.argument.sql} AS {quote(f'__x{c.index}')}" for c in compiler.aggregates if c.argument is not None]
        pre += [f"{self._event_time(source, '')} AS __ts", "__seq"]
        checks = plain.cast_checks + compiler.cast_checks
        if checks:
            pre.append("(" + " + ".join(f"CAST({c} AS INTEGER)" for c in checks) + ") AS __cast_failures")
        conditions = [f"{k.sql} IS NOT NULL" for k in compiler.group_keys] + ([where] if where else [])
        pre_sql = f"SELECT {', '.join(pre)} FROM __input WHERE {' AND '.join(conditions)}"
        table_keys: tuple[SqlType, ...] = ()
        if source.kind == TABLE:
            self._check_undoable(compiler.aggregates, query.source.pos)
            table_keys = tuple(c.type for c in source.key_columns)
            # every change of the table: a row that is deleted or stops matching takes back what it added
            pre += [f"{quote(c.name)} AS {quote(f'__pk{i}')}" for i, c in enumerate(source.key_columns)]
            pre += [f"coalesce(({' AND '.join(conditions)}) AND NOT __delete, FALSE) AS __live", "__delete"]
            pre_sql = f"SELECT {', '.join(pre)} FROM __input"
        window = None
        if query.window is not None:
            w = query.window
            grace = w.grace_ms if w.grace_ms is not None else DEFAULT_GRACE_MS
            window = WindowPlan(w.kind, w.size_ms, w.advance_ms, grace)
        agg = AggregatePlan(
            pre_sql,
            tuple(k.type for k in compiler.group_keys),
            tuple(compiler.aggregates),
            window,
            query.emit == "FINAL",
            having,
            table_keys,
        )
        node = self._source_node(source)
        if where:
            node = PlanNode("FILTER", (f"WHERE {where}",), (node,))
        node = PlanNode("GROUP BY", tuple(f"key {i}: {k.sql}" for i, k in enumerate(compiler.group_keys)), (node,))
        if window is not None:
            desc = f"{window.kind} {'gap' if window.kind == 'SESSION' else 'size'} {window.size_ms} ms" + (
                f", advance {window.advance_ms} ms" if window.advance_ms else ""
            )
            node = PlanNode(
                "WINDOW",
                (f"{desc}, grace {window.grace_ms} ms, emit {'FINAL' if agg.emit_final else 'CHANGES'}",),
                (node,),
            )
        node = PlanNode(
            "AGGREGATE",
            tuple(
                f"__agg{c.index} := {c.function.name}({c.argument.sql if c.argument else '*'})"
                for c in compiler.aggregates
            ),
            (node,),
        )
        if having:
            node = PlanNode("HAVING", (having,), (node,))
        node = PlanNode("PROJECT", tuple(s for s in select), (node,))
        return QueryPlan(
            kind=AGGREGATE,
            text=text,
            sources=(source,),
            output=tuple(outputs),
            main_sql=main,
            where_sql=where,
            aggregate=agg,
            udfs=tuple({**plain.udf_uses, **compiler.udf_uses}.values()),
            has_casts=bool(checks),
            limit=query.limit,
            windowed=window is not None,
            emit=query.emit,
            root=node,
        )

    def _plan_join(self, query: ast.Query, text: str) -> QueryPlan:
        return plan_join(self, query, text)
