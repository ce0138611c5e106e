"""The contract every serialization format follows: a whole batch in, one Arrow table out.

A record that does not decode never fails its batch. It is set aside as a :class:`DecodeFailure` with the
reason, and the caller (the runtime) attaches topic, partition and offset and routes it to a dead-letter topic.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa

TOMBSTONE_REASON = "null value (tombstone)"

#: Refines the reason of one record that failed alone: ``explain(value, default_reason) -> reason``.
Explain = Callable[[bytes, str], str]


@dataclass(frozen=True, slots=True)
class DecodeFailure:
    """One record that did not decode: its position in the input batch and why."""

    index: int
    reason: str


@dataclass(slots=True)
class Decoded:
    """Result of decoding a batch: rows that decoded, where they came from, and what was set aside.

    ``table.num_rows == len(indices)``; ``indices[i]`` is the input position of row ``i`` (ascending).
    """

    table: pa.Table
    indices: np.ndarray
    failures: list[DecodeFailure] = field(default_factory=list)

    @property
    def all_ok(self) -> bool:
        """True when every record of the batch decoded."""
        return not self.failures


class Format(ABC):
    """A value or key format. Instances are immutable and safe to share between batches."""

    #: KSQL name of the format, e.g. ``"JSON"``.
    name: str = ""

    def __init__(self, schema: pa.Schema | None = None) -> None:
        self.schema = schema

    @abstractmethod
    def decode(self, values: Sequence[bytes | None]) -> Decoded:
        """Decode a batch of serialized values into one Arrow table (columns as in ``schema``)."""

    @abstractmethod
    def encode(self, table: pa.Table) -> list[bytes]:
        """Encode every row of ``table`` into one serialized value."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}(schema={self.schema!r})"


def decode_isolating(
    values: Sequence[bytes | None],
    decode_all: Callable[[Sequence[bytes]], pa.Table],
    schema: pa.Schema | None,
    *,
    explain: Explain | None = None,
    rejected: Mapping[int, str] | None = None,
    singles: Collection[int] = (),
) -> Decoded:
    """Decode with a vectorised ``decode_all``; when it rejects the batch, bisect to isolate the bad records.

    Good batches cost one call. A batch with ``k`` bad records costs ``O(k log n)`` vectorised calls, never a
    per-record loop over the good ones. Null values are set aside as tombstones, positions in ``rejected``
    with their given reason, and positions in ``singles`` are decoded on their own (never joined with a
    neighbour). ``explain`` turns the error of a record that failed alone into a reason a user can act on.
    When nothing is excluded, the first call receives ``values`` itself (so a decoder may reuse work).
    """
    failures: list[DecodeFailure] = []
    rejected = rejected or {}
    failures.extend(DecodeFailure(i, reason) for i, reason in rejected.items())
    positions: Sequence[int]
    if rejected or None in values:
        positions = [i for i, v in enumerate(values) if v is not None and i not in rejected]
    else:
        positions = range(len(values))
    if len(positions) + len(rejected) != len(values):
        failures.extend(DecodeFailure(i, TOMBSTONE_REASON) for i, v in enumerate(values) if v is None)
    tables: list[pa.Table] = []
    kept: list[np.ndarray] = []
    whole = len(positions) == len(values)

    def fail_one(pos: int, reason: str) -> None:
        value = values[pos]
        if explain is not None and value is not None:
            try:
                reason = explain(value, reason)
            except Exception as exc:  # an explanation must never lose the record
                reason = f"{reason} ({_reason(exc)})"
        failures.append(DecodeFailure(pos, reason))

    def run(lo: int, hi: int) -> None:
        if whole and lo == 0 and hi == len(values):
            chunk: Sequence[bytes] = values  # type: ignore[assignment]
        else:
            chunk = [values[i] for i in positions[lo:hi]]  # type: ignore[misc]
        try:
            table = decode_all(chunk)
        except Exception as exc:
            if hi - lo == 1:
                fail_one(positions[lo], _reason(exc))
                return
            mid = (lo + hi) // 2
            run(lo, mid)
            run(mid, hi)
            return
        if table.num_rows != hi - lo:
            if hi - lo == 1:
                fail_one(positions[lo], f"decoded into {table.num_rows} rows, expected 1")
                return
            mid = (lo + hi) // 2
            run(lo, mid)
            run(mid, hi)
            return
        tables.append(table)
        span = positions[lo:hi]
        if isinstance(span, range):
            kept.append(np.arange(span.start, span.stop, dtype=np.int64))
        else:
            kept.append(np.asarray(span, dtype=np.int64))

    if singles:
        single_set = set(singles)
        start = 0
        for k, pos in enumerate(positions):
            if pos in single_set:
                if start < k:
                    run(start, k)
                run(k, k + 1)
                start = k + 1
        if start < len(positions):
            run(start, len(positions))
    elif positions:
        run(0, len(positions))
    if tables:
        table, indices = _combine(tables, kept, failures)
    else:
        table = schema.empty_table() if schema is not None else pa.table({})
        indices = np.empty(0, dtype=np.int64)
    failures.sort(key=lambda f: f.index)
    return Decoded(table=table, indices=indices, failures=failures)


def _combine(
    tables: list[pa.Table], kept: list[np.ndarray], failures: list[DecodeFailure]
) -> tuple[pa.Table, np.ndarray]:
    """Concatenate decoded chunks; a chunk whose types cannot join the others (inferred schemas) fails."""
    if len(tables) == 1:
        return tables[0], kept[0]
    try:
        return pa.concat_tables(tables, promote_options="permissive"), np.concatenate(kept)
    except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError):
        pass
    table, indices = tables[0], [kept[0]]
    for chunk, positions in zip(tables[1:], kept[1:], strict=True):
        try:
            table = pa.concat_tables([table, chunk], promote_options="permissive")
        except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError) as exc:
            reason = f"types differ from the rest of the batch: {_reason(exc)}"
            failures.extend(DecodeFailure(int(i), reason) for i in positions)
            continue
        indices.append(positions)
    return table, np.concatenate(indices)


def _reason(exc: Exception) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return text[:500]


def describe_value(value: object, limit: int = 40) -> str:
    """A short, quoted rendering of a bad value for failure reasons."""
    text = value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)
    if len(text) > limit:
        text = text[: limit - 3] + "..."
    return repr(text) if isinstance(value, str | bytes) else text
