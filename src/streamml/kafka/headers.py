"""Header names streamml puts on the records it writes for people to inspect (dead letters), in one place
below every layer that writes or reads them (the runtime's stages, the MQTT bridge, ``streamml dlq``), and the
request/reply headers a persistent query passes on."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

H_KIND = "streamml.error.kind"
H_MESSAGE = "streamml.error.message"
H_TOPIC = "streamml.source.topic"
H_PARTITION = "streamml.source.partition"
H_OFFSET = "streamml.source.offset"
H_QUERY = "streamml.query"
H_MODEL = "streamml.model.version"
H_TRUNCATED = "streamml.error.truncated-from"

#: longest value a dead letter keeps (a dead-letter topic takes 1 MB records by default)
MAX_VALUE_BYTES = 256 * 1024

#: request/reply over Kafka, with the names Spring Kafka's ReplyingKafkaTemplate uses, so its clients interoperate:
#: a request carries a correlation id and the topic (optionally the partition) its reply is wanted on; every
#: persistent query copies these from a request to the records it writes for it
H_CORRELATION_ID = "kafka_correlationId"
H_REPLY_TOPIC = "kafka_replyTopic"
H_REPLY_PARTITION = "kafka_replyPartition"
REPLY_HEADERS = frozenset({H_CORRELATION_ID, H_REPLY_TOPIC, H_REPLY_PARTITION})


def reply_headers(headers: Sequence[Any], indices: np.ndarray, rows: np.ndarray) -> list[list[tuple[str, Any]]] | None:
    """Per output record, the request/reply headers of the input record it came from: ``indices`` maps output
    rows to decoded rows (-1: an aggregate's output, from no one record), ``rows`` decoded rows to the batch's
    records. None when no record of the batch carries headers at all (the usual case costs one scan)."""
    if not any(headers):
        return None
    picked: list[list[tuple[str, Any]]] = []
    for index in indices.tolist():
        found = headers[int(rows[index])] if index >= 0 else None
        picked.append([(k, v) for k, v in found if k in REPLY_HEADERS] if found else [])
    return picked
