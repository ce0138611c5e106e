"""A SQL session against a Kafka cluster: statements change the shared catalog and create topics; transient
``SELECT`` statements run right here (push queries stream rows, pull queries return one table).

Persistent queries (``CREATE ... AS SELECT``, ``INSERT INTO``) are only registered here; a
:class:`streamml.runtime.runner.Runner` runs them.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import pyarrow as pa

from streamml.config import Settings
from streamml.errors import SqlError
from streamml.kafka import Admin, BatchConsumer, Producer, client_config
from streamml.runtime.catalog_store import CatalogState, CatalogStore, engine_from_state, predict_functions
from streamml.runtime.codec import SourceCodec, encode_source_rows
from streamml.runtime.observe import query_state, read_status
from streamml.runtime.tables import TableFeed
from streamml.sql import QueryPlan, Source, SqlEngine, StatementResult, parse
from streamml.sql import ast as sql_ast
from streamml.sql.plan import STREAM_TABLE_JOIN

_COMPACT = {"cleanup.policy": "compact"}
#: runs one statement the SQL engine does not: (session, statement, whole text, idempotent) -> its result
StatementHandler = Callable[["Session", sql_ast.Statement, str, bool], StatementResult]


@dataclass
class Outcome:
    """What one statement did: its engine result, and for a pull query the rows it returned."""

    result: StatementResult
    rows: pa.Table | None = None
    skipped: bool = False

    @property
    def message(self) -> str:
        return self.result.message


@dataclass
class Session:
    """Statements and queries against the cluster in ``settings``; the catalog lives in Kafka."""

    settings: Settings
    engine: SqlEngine = field(init=False)
    store: CatalogStore = field(init=False)
    functions_hook: Callable[[SqlEngine], None] | None = None
    #: statements the SQL engine does not run, and who does (``CREATE MONITOR``: see ``monitor/statements``)
    statements: Mapping[type[sql_ast.Statement], StatementHandler] = field(default_factory=dict)
    #: stored persistent queries that no longer plan: id -> why (kept in the catalog, listed by SHOW QUERIES)
    unplanned: dict[str, str] = field(init=False, default_factory=dict)

    def __post_init__(self) -> None:
        if self.functions_hook is None:
            self.functions_hook = predict_functions(self.settings)
        self._stored: dict[str, str] = {}
        self.config = client_config(self.settings)
        self.admin = Admin(self.config, timeout_s=self.settings.request_timeout_s)
        self.store = CatalogStore(self.settings)
        self.refresh()

    def refresh(self) -> CatalogState:
        """Reload the catalog from Kafka (another session may have changed it)."""
        state = self.store.load()
        engine = SqlEngine.with_plugins()
        if self.functions_hook is not None:
            self.functions_hook(engine)
        self.engine = engine_from_state(state, engine, self.unplanned)
        self._stored = dict(state.queries)
        self.engine._counter = _next_query_number(state.queries)
        return state

    # -- statements ---------------------------------------------------------------------------------------
    def execute(self, text: str, *, idempotent: bool = False, push_limit: int | None = None,
                on_rows: Callable[[pa.Table], None] | None = None) -> list[Outcome]:  # fmt: skip
        """Run every statement of ``text`` in order.

        With ``idempotent``, a ``CREATE`` whose target exists with the very same statement is a no-op, so
        a pipeline file can be applied again on every start. Push queries stream their rows to ``on_rows``.
        """
        statements = parse(text)  # syntax errors first, with positions in the whole text
        outcomes = []
        for statement in statements:
            handler = self.statements.get(type(statement))
            if handler is not None:
                outcomes.append(Outcome(handler(self, statement, text, idempotent)))
                continue
            if idempotent and self._already_applied(statement):
                outcomes.append(Outcome(StatementResult(statement, "TEXT", "already applied"), skipped=True))
                continue
            outcomes.append(self._execute_one(statement, text, push_limit, on_rows))
        return outcomes

    def _already_applied(self, statement: sql_ast.Statement) -> bool:
        if isinstance(statement, sql_ast.CreateSource | sql_ast.CreateAsSelect):
            existing = self.engine.catalog.find(statement.name)
            return existing is not None and _same(existing.statement, statement.text)
        if isinstance(statement, sql_ast.InsertInto):
            return any(_same(p.text, statement.text) for p in self.engine.queries.values())
        if isinstance(statement, sql_ast.CreateFunction):
            alias = self.engine.catalog.functions.get(statement.name.upper())
            return alias is not None and _same(alias.statement, statement.text)
        return False

    def _execute_one(self, statement: sql_ast.Statement, text: str, push_limit: int | None,
                     on_rows: Callable[[pa.Table], None] | None) -> Outcome:  # fmt: skip
        if isinstance(statement, sql_ast.Terminate):
            dropped = self._terminate_unplanned(statement.query_id)
            if dropped and statement.query_id is not None:
                self._save()
                return Outcome(StatementResult(statement, "TEXT", f"terminated {dropped[0]}", query_id=dropped[0]))
        try:
            result = self.engine.execute(statement.text)[0]
        except SqlError as exc:
            raise _relocate(exc, statement, text) from None
        stmt = result.statement
        if isinstance(stmt, sql_ast.CreateSource) and result.source is not None:
            source = result.source
            self._ensure_topic(source.topic, source.partitions, source.kind, creating=False, replicas=source.replicas)
        elif result.query_id is not None and result.plan is not None:
            sink = result.plan.sink
            if sink is not None:
                source_partitions = max((self._partitions(s.topic) for s in result.plan.sources), default=1)
                replicas = result.source.replicas if result.source is not None else None
                self._ensure_topic(sink.topic, sink.partitions or source_partitions, sink.kind, creating=True,
                                   replicas=replicas)  # fmt: skip
        elif isinstance(stmt, sql_ast.InsertValues) and result.source is not None and result.rows is not None:
            return Outcome(replace(result, message=self._insert(result.source, result.rows)))
        elif isinstance(stmt, sql_ast.DropSource) and stmt.delete_topic and result.source is not None:
            self.admin.delete_topic(result.source.topic, if_exists=True)
        elif isinstance(stmt, sql_ast.SelectStatement) and result.plan is not None:
            rows = self.select(result.plan, limit=push_limit, on_rows=on_rows)
            return Outcome(result, rows=rows)
        if result.kind in ("CREATED", "DROPPED", "QUERY", "PROPERTY") or isinstance(stmt, sql_ast.Terminate):
            self._save()
        if isinstance(stmt, sql_ast.Show) and stmt.what == "QUERIES":
            result = replace(result, message=self._queries_with_status())
        elif isinstance(stmt, sql_ast.Show) and stmt.what == "TOPICS":  # the cluster's, as ksqlDB lists them
            names = [t for t in self.admin.topic_names() if not t.startswith("_")]
            result = replace(result, message="\n".join(names))
        elif isinstance(stmt, sql_ast.Describe) and result.source is not None and result.source.value_format == "AVRO":
            framing = (
                f"Confluent wire format, schema registry {self.settings.schema_registry_url}"
                if self.settings.schema_registry_url
                else "plain Avro binary; schema derived from the columns in the catalog"
            )
            result = replace(result, message=f"{result.message}\nAvro encoding        : {framing}")
        return Outcome(result)

    def _insert(self, target: Source, rows: pa.Table) -> str:
        """Write ``INSERT INTO ... VALUES`` rows to ``target``'s topic, encoded as a query writing to it would."""
        records = encode_source_rows(target, rows, self.settings)
        with Producer(self.config) as producer:
            producer.produce_batch(target.topic, records.values, records.keys, timestamps=records.timestamps)
        return f"{len(records.values)} row written to '{target.topic}'"

    def _queries_with_status(self) -> str:
        """``SHOW QUERIES`` with each query's state on the running workers, errors included."""
        states: dict[str, list[str]] = {}
        others: dict[str, dict[str, Any]] = {}  # queries the catalog does not hold (monitors), as they report
        for worker in read_status(self.settings, timeout_s=5.0):
            for q in worker.get("queries", []):
                states.setdefault(q["query"], []).append(query_state(worker, q))
                if "statement" in q:
                    others[q["query"]] = q
        lines = ["Query ID | Status | Sink | Statement"]
        for query_id, plan in self.engine.queries.items():
            status = "; ".join(states.get(query_id, [])) or "NOT RUNNING"
            lines.append(f"{query_id} | {status} | {plan.sink.name if plan.sink else '-'} | {plan.text}")
        for query_id, q in sorted(others.items()):
            if query_id not in self.engine.queries:
                lines.append(f"{query_id} | {'; '.join(states[query_id])} | {q.get('sink', '-')} | {q['statement']}")
        for query_id, reason in self.unplanned.items():
            lines.append(
                f"{query_id} | NOT PLANNED: {reason} | {_target(self._stored[query_id])} | {self._stored[query_id]}"
            )
        return "\n".join(lines)

    def _terminate_unplanned(self, query_id: str | None) -> list[str]:
        """Forget stored queries that no longer plan (all of them for ``TERMINATE ALL``); their ids."""
        ids = [q for q in self.unplanned if query_id is None or q.upper() == query_id.upper()]
        for q in ids:
            del self.unplanned[q]
        return ids

    def _save(self) -> None:
        queries = {qid: plan.text for qid, plan in self.engine.queries.items()}
        queries.update({qid: self._stored[qid] for qid in self.unplanned})  # kept until terminated
        self.store.save(CatalogState(self.engine.catalog, queries, dict(self.engine.properties)))

    def _partitions(self, topic: str) -> int:
        return len(self.admin.describe_topic(topic, with_offsets=False).partitions)

    def _ensure_topic(
        self, topic: str, partitions: int | None, kind: str, creating: bool, replicas: int | None = None
    ) -> None:
        if self.admin.exists(topic):
            return
        if partitions is None and not creating:
            raise SqlError(
                f"topic '{topic}' does not exist",
                hint="create it first, or add PARTITIONS=n to the WITH clause to have it created",
            )
        self.admin.create_topic(topic, partitions=partitions or 1, replication=replicas or 1,
                                config=_COMPACT if kind == "TABLE" else None)  # fmt: skip

    # -- transient queries --------------------------------------------------------------------------------
    def query(self, text: str, limit: int | None = None) -> pa.Table:
        """Run one ``SELECT`` and return its rows (a pull query reads up to the current end of its input)."""
        plan = self.engine.plan(text)
        return self.select(plan, limit=limit)

    def select(self, plan: QueryPlan, limit: int | None = None,
               on_rows: Callable[[pa.Table], None] | None = None,
               stop: threading.Event | None = None) -> pa.Table:  # fmt: skip
        """Execute a transient plan. ``EMIT CHANGES`` follows the input (until ``limit`` rows or ``stop``);
        otherwise the input is read from the beginning up to its current end."""
        tables = []
        count = 0
        for produced in self._run_transient(plan, stop or threading.Event()):
            out = produced if limit is None else produced.slice(0, max(0, limit - count))
            count += out.num_rows
            if on_rows is not None:
                on_rows(out)
            tables.append(out)
            if limit is not None and count >= limit:
                break
        schema = plan.output_schema()
        return pa.concat_tables(tables, promote_options="permissive") if tables else schema.empty_table()

    def _run_transient(self, plan: QueryPlan, stop: threading.Event) -> Iterator[pa.Table]:
        push = (plan.emit or "").upper() == "CHANGES"
        executor = plan.executor()
        lock = threading.RLock()
        table_source = plan.join.right if plan.join is not None and plan.kind == STREAM_TABLE_JOIN else None
        codecs = {s.topic: SourceCodec(s, self.settings, deletes=plan.reads_deletes) for s in plan.sources}
        feed = None
        if table_source is not None:
            feed = TableFeed(self.config, table_source, codecs[table_source.topic], executor, lock)
            feed.bootstrap(10_000)
        topics = [s.topic for s in plan.sources if s is not table_source]
        right = plan.join.right.topic if plan.join is not None else None
        reset = str(self.engine.properties.get("auto.offset.reset", "latest" if push else "earliest")).lower()
        start: Any = "latest" if reset == "latest" else "earliest"
        consumer = BatchConsumer(self.config, topics, start=start, track_end=not push)
        try:
            while not stop.is_set() and not executor.done:
                if feed is not None:
                    feed.follow(10_000)
                batch = consumer.poll_batch(10_000, 0.2)
                if not len(batch):
                    if not push and consumer.reached_end():
                        return
                    continue
                for topic in dict.fromkeys(batch.topics):  # a join's batch may hold both sides: each in turn
                    part = (
                        batch
                        if len(set(batch.topics)) == 1
                        else batch.take(np.flatnonzero(np.asarray(batch.topics, dtype=object) == topic))
                    )
                    decoded = codecs[topic or ""].decode(part)
                    if decoded.table.num_rows == 0:
                        continue
                    with lock:
                        result = executor.execute(
                            decoded.table, decoded.meta, side="right" if topic == right else "left"
                        )
                    if result.table.num_rows:
                        yield result.table
        finally:
            consumer.close()
            if feed is not None:
                feed.close()
            executor.close()


def _target(statement: str) -> str:
    """The stream or table a stored persistent query writes to, read from its text ('-' if it does not parse)."""
    try:
        parsed = parse(statement)[0]
    except SqlError:
        return "-"
    return str(getattr(parsed, "name", None) or getattr(parsed, "target", None) or "-")


def _same(a: str, b: str) -> bool:
    return " ".join(a.split()).rstrip(";").upper() == " ".join(b.split()).rstrip(";").upper()


def _relocate(exc: SqlError, statement: sql_ast.Statement, text: str) -> SqlError:
    """Move an error's position from the statement's own text into the whole ``text``."""
    if exc.line is None or not statement.pos.line:
        return SqlError(exc.message, hint=exc.hint, statement=text)
    line = exc.line + statement.pos.line - 1
    column = exc.column if exc.line != 1 or exc.column is None else exc.column + statement.pos.column - 1
    return SqlError(exc.message, line=line, column=column, statement=text, hint=exc.hint)


def _next_query_number(queries: dict[str, str]) -> int:
    numbers = [int(q.rsplit("_", 1)[-1]) for q in queries if q.rsplit("_", 1)[-1].isdigit()]
    return max(numbers, default=-1) + 1


def wait_for(predicate: Callable[[], bool], timeout_s: float, interval_s: float = 0.1) -> bool:
    """Poll ``predicate`` until it holds or ``timeout_s`` passes."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval_s)
    return predicate()
