"""The statement-level entry point: run KSQL text against a catalog, broker-free.

DDL changes the catalog; ``CREATE ... AS SELECT`` and ``INSERT INTO`` register persistent queries (plans
the runtime binds to Kafka); transient ``SELECT`` statements return a plan to execute; ``SHOW``,
``DESCRIBE`` and ``EXPLAIN`` return text.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pyarrow as pa

from streamml.errors import SqlError
from streamml.sql import ast
from streamml.sql.analyzer import Analyzer
from streamml.sql.catalog import Catalog, FunctionAlias, Source, suggest
from streamml.sql.executor import evaluate_constants
from streamml.sql.functions import AGGREGATES, SCALARS, describe_function
from streamml.sql.parser import parse
from streamml.sql.plan import QueryPlan
from streamml.sql.udf import FunctionRegistry, default_registry


@dataclass
class StatementResult:
    """Outcome of one statement: ``kind`` is CREATED, DROPPED, QUERY, TEXT or PROPERTY."""

    statement: ast.Statement
    kind: str
    message: str
    source: Source | None = None
    plan: QueryPlan | None = None
    query_id: str | None = None
    #: the record ``INSERT INTO ... VALUES`` writes (its target is ``source``)
    rows: pa.Table | None = None


@dataclass
class SqlEngine:
    """Catalog + functions + persistent queries; executes statements without a broker."""

    catalog: Catalog = field(default_factory=Catalog)
    functions: FunctionRegistry = field(default_factory=lambda: default_registry().copy())
    queries: dict[str, QueryPlan] = field(default_factory=dict)
    properties: dict[str, str] = field(default_factory=dict)
    _counter: int = 0

    @classmethod
    def with_plugins(cls, catalog: Catalog | None = None) -> SqlEngine:
        """An engine whose registry also holds functions from installed plug-ins (entry points)."""
        functions = default_registry().copy()
        functions.load_entry_points()
        return cls(catalog=catalog or Catalog(), functions=functions)

    def execute(self, text: str) -> list[StatementResult]:
        """Parse and run every statement of ``text`` in order."""
        return [self._run(statement, text) for statement in parse(text)]

    def plan(self, text: str) -> QueryPlan:
        """The plan of a single ``SELECT``, ``CREATE ... AS SELECT`` or ``INSERT INTO`` (catalog unchanged)."""
        statements = parse(text)
        if len(statements) != 1:
            raise SqlError(f"expected one statement, found {len(statements)}", statement=text)
        return self._plan_of(statements[0], text, self.catalog.copy())

    def _plan_of(self, statement: ast.Statement, text: str, catalog: Catalog) -> QueryPlan:
        analyzer = Analyzer(catalog, self.functions, text)
        if isinstance(statement, ast.SelectStatement):
            return analyzer.plan_query(statement.query, statement.text)
        if isinstance(statement, ast.CreateAsSelect):
            return analyzer.create_as(statement)[1]
        if isinstance(statement, ast.InsertInto):
            return analyzer.insert_into(statement)
        raise SqlError(f"{type(statement).__name__} has no query plan", statement=text)

    def _new_id(self, prefix: str, name: str) -> str:
        query_id = f"{prefix}_{name}_{self._counter}" if name else f"{prefix}_{self._counter}"
        self._counter += 1
        return query_id

    def _run(self, stmt: ast.Statement, text: str) -> StatementResult:
        if isinstance(stmt, ast.CreateMonitor | ast.DropMonitor):
            raise SqlError(
                "monitors live on a cluster: run this statement in a session (streamml sql, streamml.sql)",
                line=stmt.pos.line,
                column=stmt.pos.column,
                statement=text,
            )
        analyzer = Analyzer(self.catalog, self.functions, text)
        if isinstance(stmt, ast.CreateSource):
            if stmt.if_not_exists and self.catalog.find(stmt.name) is not None:
                return StatementResult(stmt, "CREATED", f"{stmt.name} already exists")
            source = analyzer.create_source(stmt)
            self.catalog.add(source, replace_existing=stmt.or_replace)
            return StatementResult(stmt, "CREATED", f"{source.kind.title()} created", source=source)
        if isinstance(stmt, ast.CreateAsSelect):
            if stmt.if_not_exists and self.catalog.find(stmt.name) is not None:
                return StatementResult(stmt, "CREATED", f"{stmt.name} already exists")
            if self.catalog.find(stmt.name) is not None and not stmt.or_replace:
                raise SqlError(
                    f"{stmt.kind.lower()} '{stmt.name}' already exists",
                    line=stmt.pos.line,
                    column=stmt.pos.column,
                    statement=text,
                )
            source, plan = analyzer.create_as(stmt)
            existing = self.catalog.find(stmt.name)
            if existing is not None and existing.topic != source.topic:  # ksqlDB cannot upgrade a topic either
                raise SqlError(
                    f"CREATE OR REPLACE cannot move '{existing.name}' from topic '{existing.topic}' to "
                    f"'{source.topic}'",
                    line=stmt.pos.line, column=stmt.pos.column, statement=text,
                    hint=f"repeat WITH (KAFKA_TOPIC='{existing.topic}')",
                )  # fmt: skip
            self.catalog.add(source, replace_existing=stmt.or_replace)
            prefix = "CSAS" if stmt.kind == "STREAM" else "CTAS"
            # CREATE OR REPLACE upgrades the query writing the target in place (its id, offsets and state)
            replaced = [q for q, p in self.queries.items() if q.startswith(f"{prefix}_") and p.sink is not None
                        and p.sink.name.upper() == source.name.upper()] if stmt.or_replace else []  # fmt: skip
            query_id = replaced[0] if replaced else self._new_id(prefix, source.name)
            self.queries[query_id] = plan
            return StatementResult(stmt, "QUERY", f"Created query with ID {query_id}", source, plan, query_id)
        if isinstance(stmt, ast.InsertInto):
            plan = analyzer.insert_into(stmt)
            query_id = self._new_id("INSERTQUERY", "")
            self.queries[query_id] = plan
            return StatementResult(stmt, "QUERY", f"Created query with ID {query_id}", None, plan, query_id)
        if isinstance(stmt, ast.InsertValues):
            target, select = analyzer.insert_values(stmt)
            return StatementResult(stmt, "VALUES", "1 row", target, rows=evaluate_constants(select))
        if isinstance(stmt, ast.SelectStatement):
            plan = analyzer.plan_query(stmt.query, stmt.text)
            return StatementResult(stmt, "QUERY", "transient query", plan=plan)
        if isinstance(stmt, ast.DropSource):
            return self._drop(stmt, text)
        if isinstance(stmt, ast.CreateFunction):
            return self._create_function(stmt, text)
        if isinstance(stmt, ast.DropFunction):
            if self.catalog.functions.pop(stmt.name.upper(), None) is None and not stmt.if_exists:
                raise SqlError(
                    f"unknown function '{stmt.name}'", line=stmt.pos.line, column=stmt.pos.column, statement=text,
                    hint=suggest(stmt.name, list(self.catalog.functions)),
                )  # fmt: skip
            return StatementResult(stmt, "DROPPED", f"Function {stmt.name} dropped")
        if isinstance(stmt, ast.Show):
            return StatementResult(stmt, "TEXT", self._show(stmt.what))
        if isinstance(stmt, ast.Describe):
            source = self.catalog.get(stmt.name, line=stmt.pos.line, column=stmt.pos.column, statement=text)
            return StatementResult(stmt, "TEXT", source.describe(stmt.extended), source=source)
        if isinstance(stmt, ast.DescribeFunction):
            alias = self.catalog.functions.get(stmt.name.upper())
            if alias is not None:
                return StatementResult(stmt, "TEXT", f"{alias.name} (defined in SQL): {alias.statement}")
            try:
                return StatementResult(stmt, "TEXT", describe_function(stmt.name))
            except SqlError:
                user = self.functions.get(stmt.name)
                if user is None:
                    known = list(SCALARS) + list(AGGREGATES) + self.functions.names()
                    raise SqlError(
                        f"unknown function '{stmt.name}'",
                        line=stmt.pos.line,
                        column=stmt.pos.column,
                        statement=text,
                        hint=suggest(stmt.name, known),
                    ) from None
                return StatementResult(stmt, "TEXT", f"{user.name} (user function): {user.description}")
        if isinstance(stmt, ast.Terminate):
            return self._terminate(stmt, text)
        if isinstance(stmt, ast.Explain):
            if stmt.query_id is not None:
                plan = self.queries[self._query_id(stmt, stmt.query_id, text)]
            else:
                assert stmt.statement is not None
                plan = self._plan_of(stmt.statement, text, self.catalog.copy())
            return StatementResult(stmt, "TEXT", plan.explain(), plan=plan)
        if isinstance(stmt, ast.SetProperty):
            self.properties[stmt.key] = stmt.value
            return StatementResult(stmt, "PROPERTY", f"set {stmt.key}={stmt.value}")
        if isinstance(stmt, ast.UnsetProperty):
            self.properties.pop(stmt.key, None)
            return StatementResult(stmt, "PROPERTY", f"unset {stmt.key}")
        raise SqlError(f"unsupported statement {type(stmt).__name__}", statement=text)  # pragma: no cover

    def _drop(self, stmt: ast.DropSource, text: str) -> StatementResult:
        source = self.catalog.find(stmt.name)
        if source is None:
            if stmt.if_exists:
                return StatementResult(stmt, "DROPPED", f"{stmt.name} does not exist")
            self.catalog.get(stmt.name, line=stmt.pos.line, column=stmt.pos.column, statement=text)
        assert source is not None
        if source.kind != stmt.kind:
            raise SqlError(
                f"'{source.name}' is a {source.kind.lower()}, not a {stmt.kind.lower()}",
                line=stmt.pos.line,
                column=stmt.pos.column,
                statement=text,
            )
        users = [
            q
            for q, p in self.queries.items()
            if (p.sink and p.sink.name == source.name) or any(s.name == source.name for s in p.sources)
        ]
        if users:
            raise SqlError(
                f"cannot drop '{source.name}': used by queries {', '.join(users)}",
                line=stmt.pos.line,
                column=stmt.pos.column,
                statement=text,
                hint="TERMINATE them first",
            )
        self.catalog.drop(source.name)
        return StatementResult(stmt, "DROPPED", f"{source.kind.title()} {source.name} dropped", source=source)

    def _create_function(self, stmt: ast.CreateFunction, text: str) -> StatementResult:
        """Define ``name(args)`` as a user function called with constants first, then ``->field``s."""
        name = stmt.name.upper()

        def refuse(message: str, hint: str | None = None) -> SqlError:
            return SqlError(message, line=stmt.pos.line, column=stmt.pos.column, statement=text, hint=hint)

        if name in self.catalog.functions:
            if stmt.if_not_exists:
                return StatementResult(stmt, "CREATED", f"{stmt.name} already exists")
            if not stmt.or_replace:
                raise refuse(f"function '{stmt.name}' already exists", "use CREATE OR REPLACE FUNCTION")
        if name in SCALARS or name in AGGREGATES or self.functions.get(name) is not None:
            raise refuse(f"'{stmt.name}' is a built-in or registered function", "choose another name")
        body, fields = stmt.body, list[str]()
        while isinstance(body, ast.Dereference):
            fields.insert(0, body.field)
            body = body.base
        target = self.functions.get(body.name) if isinstance(body, ast.FunctionCall) else None
        if not isinstance(body, ast.FunctionCall) or target is None:
            raise refuse(
                "CREATE FUNCTION takes a call of a user function with constant arguments, optionally followed "
                "by ->field", "for example: CREATE FUNCTION anomaly AS PREDICT('sensor-ae')->score",
            )  # fmt: skip
        if not all(isinstance(a, ast.Literal) for a in body.args):
            raise refuse(f"the arguments of {body.name} in a function definition must be constants")
        constants = tuple(a.value for a in body.args if isinstance(a, ast.Literal))
        statement = (stmt.text or text).strip().rstrip(";")
        self.catalog.functions[name] = FunctionAlias(stmt.name, target.name, constants, tuple(fields), statement)
        return StatementResult(stmt, "CREATED", f"Function {stmt.name} created")

    def _query_id(self, stmt: ast.Statement, query_id: str, text: str) -> str:
        """The registered id matching ``query_id`` case-insensitively, or an error naming the closest one."""
        key = next((q for q in self.queries if q.upper() == query_id.upper()), None)
        if key is None:
            raise SqlError(
                f"unknown query '{query_id}'",
                line=stmt.pos.line,
                column=stmt.pos.column,
                statement=text,
                hint=suggest(query_id, list(self.queries)),
            )
        return key

    def _terminate(self, stmt: ast.Terminate, text: str) -> StatementResult:
        if stmt.query_id is None:
            ids = list(self.queries)
            self.queries.clear()
            return StatementResult(stmt, "TEXT", f"terminated {len(ids)} queries")
        key = self._query_id(stmt, stmt.query_id, text)
        del self.queries[key]
        return StatementResult(stmt, "TEXT", f"terminated {key}", query_id=key)

    def _show(self, what: str) -> str:
        if what in ("STREAMS", "TABLES"):
            sources = self.catalog.streams() if what == "STREAMS" else self.catalog.tables()
            rows = [f"{s.name} | {s.topic} | {s.key_format} | {s.value_format}" for s in sources]
            return "\n".join([f"{what[:-1].title()} Name | Kafka Topic | Key Format | Value Format", *rows])
        if what == "QUERIES":
            return "\n".join(
                ["Query ID | Sink | Statement"]
                + [f"{q} | {p.sink.name if p.sink else '-'} | {p.text}" for q, p in self.queries.items()]
            )
        if what == "TOPICS":
            return "\n".join(sorted({s.topic for s in self.catalog.sources.values()}))
        names = [(n, "SCALAR") for n in SCALARS] + [(n, "AGGREGATE") for n in AGGREGATES]
        names += [(n, "USER") for n in self.functions.names()]
        names += [(n, "SQL") for n in self.catalog.functions]
        return "\n".join(f"{n} | {k}" for n, k in sorted(names))
