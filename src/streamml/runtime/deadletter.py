"""Dead letters: records a stage could not handle, kept with headers that say what went wrong and where."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from streamml.kafka.consumer import RecordBatch
from streamml.kafka.headers import (
    H_KIND,
    H_MESSAGE,
    H_MODEL,
    H_OFFSET,
    H_PARTITION,
    H_QUERY,
    H_TOPIC,
    H_TRUNCATED,
    MAX_VALUE_BYTES,
)


@dataclass
class DeadLetters:
    """Dead letters of one batch, as columns ready for ``Producer.produce_batch``."""

    keys: list[bytes | None] = field(default_factory=list)
    values: list[bytes | None] = field(default_factory=list)
    headers: list[list[tuple[str, bytes]]] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.values)

    def add(
        self,
        batch: RecordBatch,
        rows: Sequence[int],
        reasons: Sequence[str],
        kind: str,
        query_id: str,
        model_version: str | None = None,
        values: Sequence[bytes | None] | None = None,
    ) -> None:
        """Dead-letter the records at ``rows`` of ``batch`` (one reason each).

        ``values`` replaces the records' own values (a produce-stage failure keeps the output that was
        refused); a value over :data:`MAX_VALUE_BYTES` is truncated, and says so in a header.
        """
        keys, topics = batch.keys, batch.topics
        partitions, offsets = batch.partitions, batch.offsets
        originals = batch.values if values is None else None
        for i, (row, reason) in enumerate(zip(rows, reasons, strict=True)):
            value = originals[row] if originals is not None else values[i]  # type: ignore[index]
            headers = [
                (H_KIND, kind.encode()),
                (H_MESSAGE, reason.encode()),
                (H_TOPIC, str(topics[row]).encode()),
                (H_PARTITION, str(int(partitions[row])).encode()),
                (H_OFFSET, str(int(offsets[row])).encode()),
                (H_QUERY, query_id.encode()),
            ]
            if model_version is not None:
                headers.append((H_MODEL, model_version.encode()))
            if value is not None and len(value) > MAX_VALUE_BYTES:
                headers.append((H_TRUNCATED, str(len(value)).encode()))
                value = value[:MAX_VALUE_BYTES]
            self.keys.append(keys[row])
            self.values.append(value)
            self.headers.append(headers)


def header_dict(headers: Sequence[tuple[str, bytes | None]] | None) -> dict[str, str]:
    """Headers of a record as text."""
    return {k: (v or b"").decode(errors="replace") for k, v in headers or []}
