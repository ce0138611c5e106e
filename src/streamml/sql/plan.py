"""Logical plans of persistent and transient queries, and their ``EXPLAIN`` rendering.

A :class:`QueryPlan` is pure data: the compiled DuckDB SQL of each step plus what the runtime needs to bind
it to Kafka (source topics and formats, sink topic and formats, output key columns). ``executor()``
compiles it into a :class:`streamml.sql.executor.QueryExecutor`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import pyarrow as pa

from streamml.sql.catalog import Source
from streamml.sql.compiler import AggregateCall, UdfUse, WindowCall
from streamml.sql.types import SqlType

if TYPE_CHECKING:
    from streamml.sql.executor import QueryExecutor

STATELESS = "STATELESS"
AGGREGATE = "AGGREGATE"
STREAM_TABLE_JOIN = "STREAM_TABLE_JOIN"
STREAM_STREAM_JOIN = "STREAM_STREAM_JOIN"
TABLE_TABLE_JOIN = "TABLE_TABLE_JOIN"
#: a stateless projection with calls OVER a window of rows per key (the rows are the state)
SEQUENCE = "SEQUENCE"
#: grace period of windows and join windows when the statement names none (as in ksqlDB)
DEFAULT_GRACE_MS = 24 * 3_600_000


@dataclass(frozen=True)
class OutputColumn:
    name: str
    type: SqlType
    key: bool = False


@dataclass(frozen=True)
class Sink:
    """Where a persistent query writes: the created or target source."""

    name: str
    kind: str
    topic: str
    key_format: str
    value_format: str
    partitions: int | None = None


@dataclass(frozen=True)
class WindowPlan:
    """Window of an aggregation, in milliseconds (``advance_ms`` for hopping, ``size_ms`` = gap for session)."""

    kind: str
    size_ms: int
    advance_ms: int | None
    grace_ms: int


@dataclass(frozen=True)
class AggregatePlan:
    """Aggregation step: ``pre_sql`` yields ``__key*``, ``__x*``, ``__ts``, ``__seq`` rows from the input."""

    pre_sql: str
    key_types: tuple[SqlType, ...]
    calls: tuple[AggregateCall, ...]
    window: WindowPlan | None
    emit_final: bool
    #: HAVING condition over the aggregation result (a key that stops satisfying it gets a tombstone)
    having: str | None = None
    #: over a TABLE: the types of its primary key (``__pk*`` in ``pre_sql``, with ``__live`` and ``__delete``);
    #: a changed or deleted row takes back what it added
    table_keys: tuple[SqlType, ...] = ()


@dataclass(frozen=True)
class SequencePlan:
    """Calls OVER a window of rows: ``pre_sql`` filters the input and adds ``__wkey`` (the partition key as
    text) and ``__wa0``, ``__wa1``, ... (every distinct windowed argument, as DOUBLE); call ``i`` becomes
    column ``__win{i}`` of the input of ``main_sql``."""

    pre_sql: str
    calls: tuple[WindowCall, ...]
    #: argument SQL -> its ``__wa`` index
    arguments: dict[str, int]

    @property
    def history(self) -> int:
        """Rows kept per key: one less than the longest window."""
        return max(call.rows for call in self.calls) - 1


@dataclass(frozen=True)
class JoinPlan:
    """Join step. For stream-table joins the table is the right side; ``right_key`` is its key column."""

    kind: str
    right: Source
    right_alias: str
    left_key_sql: str
    right_key: str
    within: tuple[int, int] | None = None
    #: stream-stream joins: the query run when a batch arrives on the right side
    right_sql: str = ""
    #: stream-stream joins: how long after the window a record is still accepted (ms)
    grace_ms: int = DEFAULT_GRACE_MS


@dataclass(frozen=True)
class PlanNode:
    """One step of the plan for ``EXPLAIN``."""

    label: str
    details: tuple[str, ...] = ()
    children: tuple[PlanNode, ...] = ()

    def render(self, depth: int = 0) -> list[str]:
        pad = "  " * depth
        lines = [f"{pad}> [ {self.label} ]"]
        lines += [f"{pad}    {d}" for d in self.details]
        for child in self.children:
            lines += child.render(depth + 1)
        return lines


@dataclass
class QueryPlan:
    """A compiled query: steps as DuckDB SQL, output schema, sources and sink."""

    kind: str
    text: str
    sources: tuple[Source, ...]
    output: tuple[OutputColumn, ...]
    main_sql: str
    sink: Sink | None = None
    where_sql: str | None = None
    aggregate: AggregatePlan | None = None
    join: JoinPlan | None = None
    sequence: SequencePlan | None = None
    udfs: tuple[UdfUse, ...] = ()
    has_casts: bool = False
    limit: int | None = None
    #: output column -> input column for outputs that are plain column references (stateless plans)
    passthrough: dict[str, str] = field(default_factory=dict)
    windowed: bool = False
    emit: str | None = None
    root: PlanNode = field(default_factory=lambda: PlanNode("EMPTY"))
    #: ``PARTITION BY NULL``: the records are written without a key
    no_key: bool = False

    @property
    def key_columns(self) -> list[str]:
        """Output columns that go into the Kafka record key (empty: the input key passes through)."""
        return [c.name for c in self.output if c.key]

    @property
    def value_columns(self) -> list[str]:
        return [c.name for c in self.output if not c.key]

    @property
    def reads_deletes(self) -> bool:
        """Whether the query takes a table's deletes as rows (``__delete``): an aggregation over a table, or
        a table-table join."""
        return self.kind == TABLE_TABLE_JOIN or (self.aggregate is not None and bool(self.aggregate.table_keys))

    @property
    def stateful(self) -> bool:
        return self.kind != STATELESS

    def constant_arguments(self, function: str) -> set[tuple[Any, ...]]:
        """The constant arguments of every call of user function ``function`` in this plan, windowed or not
        (``PREDICT('fraud', x)`` gives ``('fraud', None)``)."""
        name = function.upper()
        found = {c for use in self.udfs if use.function.name.upper() == name for c in use.constants}
        for call in self.sequence.calls if self.sequence is not None else ():
            if call.function.name.upper() == name:
                found.add(tuple(a.value if a.is_constant else None for a in call.arguments))
        return found

    def output_schema(self) -> pa.Schema:
        """Arrow schema of :attr:`BatchResult.table` (key columns first, then value columns)."""
        return pa.schema([pa.field(c.name, c.type.to_arrow()) for c in self.output])

    def explain(self) -> str:
        """Readable multi-line description of the plan."""
        header = [f"Query type: {self.kind}{' (windowed)' if self.windowed else ''}", f"SQL: {self.text.strip()}"]
        schema = ", ".join(f"{c.name} {c.type}{' KEY' if c.key else ''}" for c in self.output)
        return "\n".join([*header, f"Output schema: {schema}", "", "Execution plan:", *self.root.render()])

    def executor(self) -> QueryExecutor:
        """Compile this plan once into an executor for in-memory batches."""
        from streamml.sql.executor import QueryExecutor

        return QueryExecutor(self)
