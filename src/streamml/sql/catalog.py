"""The catalog of streams and tables: columns, keys, topic and formats, serialisable to JSON.

Names are stored normalised (upper case unless quoted) and looked up exactly first, then
case-insensitively; unknown names raise :class:`SqlError` with the closest known name as a hint.
"""

from __future__ import annotations

import difflib
import json
from dataclasses import dataclass, field, replace
from typing import Any

import pyarrow as pa

from streamml.errors import SqlError
from streamml.sql.types import SqlType

STREAM = "STREAM"
TABLE = "TABLE"
#: Pseudo-columns every source has, with their types (``ROWKEY`` only when no key columns are declared).
PSEUDO_COLUMNS: dict[str, SqlType] = {
    "ROWTIME": SqlType("BIGINT"),
    "ROWPARTITION": SqlType("INTEGER"),
    "ROWOFFSET": SqlType("BIGINT"),
}
WINDOW_COLUMNS: dict[str, SqlType] = {"WINDOWSTART": SqlType("BIGINT"), "WINDOWEND": SqlType("BIGINT")}


def suggest(name: str, candidates: list[str]) -> str | None:
    """A 'did you mean' hint for ``name`` among ``candidates``, or None."""
    upper = {c.upper(): c for c in candidates}
    close = difflib.get_close_matches(name.upper(), list(upper), n=1, cutoff=0.6)
    return f"did you mean '{upper[close[0]]}'?" if close else None


@dataclass(frozen=True)
class Column:
    """A column of a source; ``key`` marks key columns (``KEY`` on streams, ``PRIMARY KEY`` on tables)."""

    name: str
    type: SqlType
    key: bool = False


@dataclass(frozen=True)
class Source:
    """A stream or table: schema, topic and serialization formats."""

    name: str
    kind: str
    columns: tuple[Column, ...]
    topic: str
    value_format: str = "JSON"
    key_format: str = "KAFKA"
    partitions: int | None = None
    replicas: int | None = None
    timestamp: str | None = None
    timestamp_format: str | None = None
    value_delimiter: str | None = None
    key_field: str | None = None
    windowed: bool = False
    properties: dict[str, Any] = field(default_factory=dict)
    statement: str = ""

    @property
    def key_columns(self) -> list[Column]:
        return [c for c in self.columns if c.key]

    @property
    def unwrapped(self) -> bool:
        """``WRAP_SINGLE_VALUE=false``: the one value column is written as its bare value."""
        return str(self.properties.get("WRAP_SINGLE_VALUE", "true")).lower() == "false"

    @property
    def value_columns(self) -> list[Column]:
        return [c for c in self.columns if not c.key]

    def column(self, name: str) -> Column | None:
        """The column named ``name`` (exact match first, then case-insensitive)."""
        for c in self.columns:
            if c.name == name:
                return c
        matches = [c for c in self.columns if c.name.upper() == name.upper()]
        return matches[0] if len(matches) == 1 else None

    def value_schema(self) -> pa.Schema:
        """Arrow schema of the value columns (what a value format decodes into)."""
        return pa.schema([pa.field(c.name, c.type.to_arrow()) for c in self.value_columns])

    def key_schema(self) -> pa.Schema:
        """Arrow schema of the key columns (what a key format decodes into)."""
        return pa.schema([pa.field(c.name, c.type.to_arrow()) for c in self.key_columns])

    def describe(self, extended: bool = False) -> str:
        """Text for ``DESCRIBE``."""
        width = max([len(c.name) for c in self.columns] + [len("ROWTIME")]) + 2
        lines = [f"Name                 : {self.name}", f"Type                 : {self.kind}"]
        if extended:
            lines += [
                f"Kafka topic          : {self.topic} (partitions: {self.partitions or '-'}, "
                f"replication: {self.replicas or '-'})",
                f"Key format           : {self.key_format}",
                f"Value format         : {self.value_format}",
                f"Timestamp field      : {self.timestamp or 'Not set - using <ROWTIME>'}",
            ]
        lines += ["", f" {'Field'.ljust(width)}| Type", "-" * (width + 30)]
        for c in self.columns:
            suffix = " (primary key)" if c.key and self.kind == TABLE else " (key)" if c.key else ""
            lines.append(f" {c.name.ljust(width)}| {c.type.display()}{suffix}")
        if extended and self.statement:
            lines += ["", f"Statement            : {self.statement}"]
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "kind": self.kind,
            "columns": [{"name": c.name, "type": str(c.type), "key": c.key} for c in self.columns],
            "topic": self.topic,
            "value_format": self.value_format,
            "key_format": self.key_format,
            "partitions": self.partitions,
            "replicas": self.replicas,
            "timestamp": self.timestamp,
            "timestamp_format": self.timestamp_format,
            "value_delimiter": self.value_delimiter,
            "key_field": self.key_field,
            "windowed": self.windowed,
            "properties": self.properties,
            "statement": self.statement,
        }

    @staticmethod
    def from_dict(data: dict[str, Any]) -> Source:
        from streamml.sql.parser import parse_type

        columns = tuple(Column(c["name"], parse_type(c["type"]), bool(c.get("key"))) for c in data["columns"])
        fields = {k: v for k, v in data.items() if k != "columns"}
        return Source(columns=columns, **fields)


@dataclass(frozen=True)
class FunctionAlias:
    """A named function defined in SQL: ``name(args)`` is ``target(*constants, *args)`` then ``->field`` for
    each of ``fields`` (``CREATE FUNCTION anomaly AS PREDICT('sensor-ae')->score``)."""

    name: str
    target: str
    constants: tuple[Any, ...] = ()
    fields: tuple[str, ...] = ()
    statement: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "target": self.target, "constants": list(self.constants),
                "fields": list(self.fields), "statement": self.statement}  # fmt: skip

    @staticmethod
    def from_dict(data: dict[str, Any]) -> FunctionAlias:
        return FunctionAlias(
            data["name"], data["target"], tuple(data.get("constants", ())), tuple(data.get("fields", ())),
            data.get("statement", ""),
        )  # fmt: skip


@dataclass
class Catalog:
    """Streams and tables by name, and the functions defined in SQL."""

    sources: dict[str, Source] = field(default_factory=dict)
    functions: dict[str, FunctionAlias] = field(default_factory=dict)

    def add(self, source: Source, *, replace_existing: bool = False) -> None:
        existing = self.find(source.name)
        if existing is not None and not replace_existing:
            raise SqlError(f"{existing.kind.lower()} '{existing.name}' already exists")
        if existing is not None:
            del self.sources[existing.name]
        self.sources[source.name] = source

    def drop(self, name: str) -> Source:
        source = self.get(name)
        del self.sources[source.name]
        return source

    def find(self, name: str) -> Source | None:
        """The source named ``name`` (exact, then case-insensitive), or None."""
        if name in self.sources:
            return self.sources[name]
        matches = [s for s in self.sources.values() if s.name.upper() == name.upper()]
        return matches[0] if len(matches) == 1 else None

    def get(
        self, name: str, *, line: int | None = None, column: int | None = None, statement: str | None = None
    ) -> Source:
        """The source named ``name``; raises :class:`SqlError` with a suggestion when it is unknown."""
        source = self.find(name)
        if source is None:
            raise SqlError(
                f"unknown stream or table '{name}'",
                line=line,
                column=column,
                statement=statement,
                hint=suggest(name, list(self.sources)),
            )
        return source

    def streams(self) -> list[Source]:
        return [s for s in self.sources.values() if s.kind == STREAM]

    def tables(self) -> list[Source]:
        return [s for s in self.sources.values() if s.kind == TABLE]

    def to_json(self) -> str:
        """Serialise (stable key order) for storage in a compacted topic."""
        data: dict[str, Any] = {"version": 1, "sources": [s.to_dict() for s in self.sources.values()]}
        if self.functions:
            data["functions"] = [f.to_dict() for f in self.functions.values()]
        return json.dumps(data, sort_keys=True)

    @staticmethod
    def from_json(text: str | bytes) -> Catalog:
        data = json.loads(text)
        catalog = Catalog()
        for item in data.get("sources", []):
            catalog.add(Source.from_dict(item))
        for item in data.get("functions", []):
            alias = FunctionAlias.from_dict(item)
            catalog.functions[alias.name.upper()] = alias
        return catalog

    def copy(self) -> Catalog:
        return Catalog({k: replace(v) for k, v in self.sources.items()}, dict(self.functions))
