"""Streaming SQL in the KSQL dialect: parse, analyse, plan and run on Arrow batches (broker-free).

>>> engine = SqlEngine()
>>> _ = engine.execute("CREATE STREAM s (x DOUBLE) WITH (KAFKA_TOPIC='s', VALUE_FORMAT='JSON');")
>>> plan = engine.plan("SELECT x * 2 AS y FROM s WHERE x > 1 EMIT CHANGES;")
>>> import pyarrow as pa
>>> plan.executor().execute(pa.table({"X": [0.5, 2.0]})).table.column("Y").to_pylist()
[4.0]
"""

from streamml.sql.catalog import Catalog, Column, Source
from streamml.sql.engine import SqlEngine, StatementResult
from streamml.sql.executor import BatchResult, QueryExecutor, RowFailure
from streamml.sql.images import IMAGE_PIXELS
from streamml.sql.parser import parse, parse_statement, parse_type
from streamml.sql.plan import QueryPlan
from streamml.sql.types import SqlType
from streamml.sql.udf import ENTRY_POINT_GROUP, FunctionRegistry, UserFunction, default_registry, udf

default_registry().add(IMAGE_PIXELS)  # a built-in written in Python: images in records -> model input

__all__ = [
    "ENTRY_POINT_GROUP",
    "BatchResult",
    "Catalog",
    "Column",
    "FunctionRegistry",
    "QueryExecutor",
    "QueryPlan",
    "RowFailure",
    "Source",
    "SqlEngine",
    "SqlType",
    "StatementResult",
    "UserFunction",
    "default_registry",
    "parse",
    "parse_statement",
    "parse_type",
    "udf",
]
