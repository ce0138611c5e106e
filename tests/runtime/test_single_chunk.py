"""A decoded batch reaches SQL in one chunk, so each function in the query (PREDICT) runs once per batch."""

from __future__ import annotations

import numpy as np
import orjson
import pyarrow as pa

from streamml.config import Settings
from streamml.runtime.codec import SourceCodec
from streamml.runtime.query import single_chunk
from streamml.sql import FunctionRegistry, SqlEngine, udf


class _Batch:
    """The columns of a consumed batch that decoding reads."""

    def __init__(self, values: list[bytes]) -> None:
        n = len(values)
        self.values, self.keys, self.topics = values, [None] * n, ["s"] * n
        self.timestamps = np.full(n, 1_700_000_000_000, np.int64)
        self.partitions = np.zeros(n, np.int32)
        self.offsets = np.arange(n, dtype=np.int64)

    def __len__(self) -> int:
        return len(self.values)


def test_a_function_runs_once_per_decoded_batch(tmp_path: object) -> None:
    registry, calls = FunctionRegistry(), []

    @udf(name="score", returns="DOUBLE", params=["DOUBLE", "DOUBLE"], registry=registry)
    def score(a: pa.Array, b: pa.Array) -> pa.Array:
        calls.append(len(a))
        return pa.compute.add(a, b)

    engine = SqlEngine(functions=registry)
    engine.execute("CREATE STREAM s (a DOUBLE, b DOUBLE) WITH (KAFKA_TOPIC='s', VALUE_FORMAT='JSON');")
    plan = engine.plan("SELECT score(a, b) AS r FROM s;")
    codec = SourceCodec(plan.sources[0], Settings(home=tmp_path))  # type: ignore[arg-type]
    batch = _Batch([orjson.dumps({"a": float(i), "b": 1.0}) for i in range(2_000)])
    decoded = codec.decode(batch)  # type: ignore[arg-type]

    out = plan.executor().execute(single_chunk(decoded.table), decoded.meta)

    assert calls == [2_000]
    assert out.table.column("R").to_pylist() == [float(i) + 1.0 for i in range(2_000)]
