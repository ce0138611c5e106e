"""SQL types of the KSQL dialect and their mapping to Arrow and DuckDB types.

``str(t)`` gives parseable SQL (``ARRAY<STRING>``); :meth:`SqlType.display` gives the ksqlDB ``DESCRIBE``
spelling (``VARCHAR(STRING)``).
"""

from __future__ import annotations

from dataclasses import dataclass

import pyarrow as pa

from streamml.errors import SqlError

_ALIASES = {
    "BOOLEAN": "BOOLEAN",
    "BOOL": "BOOLEAN",
    "INT": "INTEGER",
    "INTEGER": "INTEGER",
    "BIGINT": "BIGINT",
    "DOUBLE": "DOUBLE",
    "VARCHAR": "STRING",
    "STRING": "STRING",
    "BYTES": "BYTES",
    "DATE": "DATE",
    "TIME": "TIME",
    "TIMESTAMP": "TIMESTAMP",
}
PRIMITIVES = frozenset(_ALIASES.values())


@dataclass(frozen=True, slots=True)
class SqlType:
    """A SQL type: a primitive, ``DECIMAL(p, s)``, ``ARRAY<T>``, ``MAP<K, V>`` or ``STRUCT<name T, ...>``.

    ``NULL`` is the type of the ``NULL`` literal and converts to anything.
    """

    name: str
    args: tuple[SqlType, ...] = ()
    field_names: tuple[str, ...] = ()
    precision: int = 0
    scale: int = 0

    # ---- constructors -----------------------------------------------------------------------------------
    @staticmethod
    def primitive(name: str) -> SqlType:
        """The primitive named ``name`` (any accepted spelling: ``INT``, ``VARCHAR``, ...)."""
        canonical = _ALIASES.get(name.upper())
        if canonical is None:
            raise SqlError(f"unknown type '{name}'", hint="types: " + ", ".join(sorted(_ALIASES)))
        return SqlType(canonical)

    @staticmethod
    def decimal(precision: int, scale: int) -> SqlType:
        if not 1 <= precision <= 38 or not 0 <= scale <= precision:
            raise SqlError(f"invalid DECIMAL({precision}, {scale}): need 1 <= precision <= 38, scale <= precision")
        return SqlType("DECIMAL", precision=precision, scale=scale)

    @staticmethod
    def array(element: SqlType) -> SqlType:
        return SqlType("ARRAY", (element,))

    @staticmethod
    def map(key: SqlType, value: SqlType) -> SqlType:
        return SqlType("MAP", (key, value))

    @staticmethod
    def struct(fields: list[tuple[str, SqlType]] | tuple[tuple[str, SqlType], ...]) -> SqlType:
        return SqlType("STRUCT", tuple(t for _, t in fields), tuple(n for n, _ in fields))

    # ---- predicates -------------------------------------------------------------------------------------
    @property
    def is_numeric(self) -> bool:
        return self.name in ("INTEGER", "BIGINT", "DOUBLE", "DECIMAL", "NULL")

    @property
    def is_integral(self) -> bool:
        return self.name in ("INTEGER", "BIGINT")

    @property
    def is_string(self) -> bool:
        return self.name in ("STRING", "NULL")

    @property
    def fields(self) -> list[tuple[str, SqlType]]:
        return list(zip(self.field_names, self.args, strict=True))

    def field(self, name: str) -> SqlType | None:
        """Type of struct field ``name`` (case-insensitive), or None."""
        for n, t in zip(self.field_names, self.args, strict=True):
            if n.upper() == name.upper():
                return t
        return None

    # ---- rendering --------------------------------------------------------------------------------------
    def __str__(self) -> str:
        if self.name == "DECIMAL":
            return f"DECIMAL({self.precision}, {self.scale})"
        if self.name == "ARRAY":
            return f"ARRAY<{self.args[0]}>"
        if self.name == "MAP":
            return f"MAP<{self.args[0]}, {self.args[1]}>"
        if self.name == "STRUCT":
            return "STRUCT<" + ", ".join(f"`{n}` {t}" for n, t in self.fields) + ">"
        return self.name

    def display(self) -> str:
        """ksqlDB ``DESCRIBE`` spelling, e.g. ``VARCHAR(STRING)`` or ``STRUCT<A INTEGER>``."""
        if self.name == "STRING":
            return "VARCHAR(STRING)"
        if self.name == "ARRAY":
            return f"ARRAY<{self.args[0].display()}>"
        if self.name == "MAP":
            return f"MAP<{self.args[0].display()}, {self.args[1].display()}>"
        if self.name == "STRUCT":
            return "STRUCT<" + ", ".join(f"{n} {t.display()}" for n, t in self.fields) + ">"
        return str(self)

    # ---- mappings ---------------------------------------------------------------------------------------
    def to_arrow(self) -> pa.DataType:
        """The Arrow type that holds values of this type."""
        simple = {
            "BOOLEAN": pa.bool_(),
            "INTEGER": pa.int32(),
            "BIGINT": pa.int64(),
            "DOUBLE": pa.float64(),
            "STRING": pa.string(),
            "BYTES": pa.binary(),
            "DATE": pa.date32(),
            "TIME": pa.time64("us"),
            "TIMESTAMP": pa.timestamp("ms"),
            "NULL": pa.null(),
        }
        if self.name in simple:
            return simple[self.name]
        if self.name == "DECIMAL":
            return pa.decimal128(self.precision, self.scale)
        if self.name == "ARRAY":
            return pa.list_(self.args[0].to_arrow())
        if self.name == "MAP":
            return pa.map_(self.args[0].to_arrow(), self.args[1].to_arrow())
        return pa.struct([pa.field(n, t.to_arrow()) for n, t in self.fields])

    def to_duckdb(self) -> str:
        """The DuckDB type, as SQL text."""
        simple = {
            "BOOLEAN": "BOOLEAN",
            "INTEGER": "INTEGER",
            "BIGINT": "BIGINT",
            "DOUBLE": "DOUBLE",
            "STRING": "VARCHAR",
            "BYTES": "BLOB",
            "DATE": "DATE",
            "TIME": "TIME",
            "TIMESTAMP": "TIMESTAMP_MS",
            "NULL": "INTEGER",
        }
        if self.name in simple:
            return simple[self.name]
        if self.name == "DECIMAL":
            return f"DECIMAL({self.precision}, {self.scale})"
        if self.name == "ARRAY":
            return f"{self.args[0].to_duckdb()}[]"
        if self.name == "MAP":
            return f"MAP({self.args[0].to_duckdb()}, {self.args[1].to_duckdb()})"
        inner = ", ".join(f'"{n.replace(chr(34), chr(34) * 2)}" {t.to_duckdb()}' for n, t in self.fields)
        return f"STRUCT({inner})"

    @staticmethod
    def from_arrow(dtype: pa.DataType) -> SqlType:
        """The SQL type of an Arrow type (narrower integers widen, timestamps of any unit map to TIMESTAMP)."""
        if pa.types.is_boolean(dtype):
            return BOOLEAN
        if pa.types.is_integer(dtype):
            return INTEGER if dtype.bit_width <= 32 and pa.types.is_signed_integer(dtype) else BIGINT
        if pa.types.is_floating(dtype):
            return DOUBLE
        if pa.types.is_decimal(dtype):
            return SqlType.decimal(dtype.precision, dtype.scale)
        if pa.types.is_string(dtype) or pa.types.is_large_string(dtype) or pa.types.is_string_view(dtype):
            return STRING
        if pa.types.is_binary(dtype) or pa.types.is_large_binary(dtype) or pa.types.is_fixed_size_binary(dtype):
            return BYTES
        if pa.types.is_date(dtype):
            return DATE
        if pa.types.is_time(dtype):
            return TIME
        if pa.types.is_timestamp(dtype):
            return TIMESTAMP
        if pa.types.is_null(dtype):
            return NULL
        if pa.types.is_map(dtype):
            return SqlType.map(SqlType.from_arrow(dtype.key_type), SqlType.from_arrow(dtype.item_type))
        if pa.types.is_list(dtype) or pa.types.is_large_list(dtype) or pa.types.is_fixed_size_list(dtype):
            return SqlType.array(SqlType.from_arrow(dtype.value_type))
        if pa.types.is_struct(dtype):
            return SqlType.struct(
                [(dtype.field(i).name, SqlType.from_arrow(dtype.field(i).type)) for i in range(dtype.num_fields)]
            )
        raise SqlError(f"no SQL type for Arrow type {dtype}")


BOOLEAN = SqlType("BOOLEAN")
INTEGER = SqlType("INTEGER")
BIGINT = SqlType("BIGINT")
DOUBLE = SqlType("DOUBLE")
STRING = SqlType("STRING")
BYTES = SqlType("BYTES")
DATE = SqlType("DATE")
TIME = SqlType("TIME")
TIMESTAMP = SqlType("TIMESTAMP")
NULL = SqlType("NULL")

_NUMERIC_RANK = {"NULL": 0, "INTEGER": 1, "BIGINT": 2, "DECIMAL": 3, "DOUBLE": 4}


def numeric_supertype(a: SqlType, b: SqlType) -> SqlType:
    """Result type of arithmetic on ``a`` and ``b`` (both numeric): the wider of the two."""
    if a.name == "DECIMAL" and b.name == "DECIMAL":
        scale = max(a.scale, b.scale)
        return SqlType.decimal(min(38, max(a.precision - a.scale, b.precision - b.scale) + scale + 1), scale)
    wider = a if _NUMERIC_RANK[a.name] >= _NUMERIC_RANK[b.name] else b
    return INTEGER if wider.name == "NULL" else wider


def comparable(a: SqlType, b: SqlType) -> bool:
    """Whether values of ``a`` and ``b`` may be compared with ``=``, ``<``, ..."""
    if a.name == "NULL" or b.name == "NULL":
        return True
    if a.is_numeric and b.is_numeric:
        return True
    time_like = {"TIMESTAMP", "STRING"}
    if a.name in time_like and b.name in time_like:
        return True
    return a == b


def common_type(types: list[SqlType]) -> SqlType | None:
    """The type all of ``types`` convert to (for CASE, COALESCE, IN), or None when they do not agree."""
    known = [t for t in types if t.name != "NULL"]
    if not known:
        return NULL
    result = known[0]
    for t in known[1:]:
        if t == result:
            continue
        if t.is_numeric and result.is_numeric:
            result = numeric_supertype(result, t)
        else:
            return None
    return result
