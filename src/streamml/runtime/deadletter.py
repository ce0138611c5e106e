"""Dead letters: records a stage could not handle, kept with headers that say what went wrong and where."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from streamml.kafka.consumer import RecordBatch

H_KIND = "streamml.error.kind"
H_MESSAGE = "streamml.error.message"
H_TOPIC = "streamml.source.topic"
H_PARTITION = "streamml.source.partition"
H_OFFSET = "streamml.source.offset"
H_QUERY = "streamml.query"
H_MODEL = "streamml.model.version"


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
    ) -> None:
        """Dead-letter the records at ``rows`` of ``batch`` (one reason each)."""
        keys, values, topics = batch.keys, batch.values, batch.topics
        partitions, offsets = batch.partitions, batch.offsets
        for row, reason in zip(rows, reasons, strict=True):
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
            self.keys.append(keys[row])
            self.values.append(values[row])
            self.headers.append(headers)


def header_dict(headers: Sequence[tuple[str, bytes | None]] | None) -> dict[str, str]:
    """Headers of a record as text."""
    return {k: (v or b"").decode(errors="replace") for k, v in headers or []}
