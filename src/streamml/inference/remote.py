"""Remote model versions: a batch scored by a model server (OIP v2 or TF Serving, REST or gRPC).

A :class:`RemoteModel` stands where an ONNX model would: same signature, same feeds, one call per batch,
never per record. Each model keeps one long-lived connection (a gRPC channel or a pooled HTTP client) for
its life. A call that fails in a retriable way (the server is unreachable, timed out, overloaded) is retried
with exponential backoff and jitter; a call that fails for good raises :class:`RemoteError`, which names
the endpoint. After ``breaker_failures`` failed calls in a row the circuit opens: calls fail at once for
``breaker_open_s``, then one trial call decides whether it closes again. Nothing here knows Kafka: PREDICT
sends the rows of a batch that failed for good to the dead-letter topic.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Sequence
from typing import Any, Protocol

import numpy as np
import pyarrow as pa

from streamml.errors import ModelError
from streamml.inference.tensors import DATATYPES, SIGNATURE_DATATYPES, Limits, datatype_of, to_bytes
from streamml.models.card import OutputField, OutputSpec, RemoteEndpoint
from streamml.models.runtime import Batch, BatchModel
from streamml.models.signature import Signature, TensorSpec

log = logging.getLogger(__name__)

Feed = dict[str, np.ndarray]
#: what a client accepts back: no limit tighter than the server's own
REPLY_LIMITS = Limits(max_request_bytes=1 << 31, max_tensor_elements=1 << 31, max_batch_rows=1 << 31)
_SIGNATURE_OF = {oip: sig for sig, oip in SIGNATURE_DATATYPES.items()}


class RemoteError(ModelError):
    """A call to a model server failed; ``retriable`` when trying again may succeed."""

    def __init__(self, message: str, *, retriable: bool, hint: str | None = None) -> None:
        super().__init__(message, hint=hint)
        self.retriable = retriable


class Transport(Protocol):
    """One protocol over one connection."""

    def infer(self, feed: Feed, timeout_s: float) -> Feed: ...

    def metadata(self, timeout_s: float) -> tuple[list[TensorSpec], list[TensorSpec]]: ...

    def close(self) -> None: ...


class Breaker:
    """Opens after ``failures`` failed calls in a row; lets one trial call through after ``open_s``."""

    def __init__(self, failures: int, open_s: float) -> None:
        self.failures, self.open_s = failures, open_s
        self._lock = threading.Lock()
        self._failed = 0
        self._opened_at: float | None = None

    def check(self, endpoint: str) -> None:
        with self._lock:
            if self._opened_at is None:
                return
            waited = time.monotonic() - self._opened_at
            if waited < self.open_s:
                raise RemoteError(
                    f"circuit open for {endpoint} after {self._failed} failed calls in a row "
                    f"(next try in {self.open_s - waited:.1f} s)",
                    retriable=False,
                )
            self._opened_at = time.monotonic()  # half-open: this call is the trial; others still fail fast

    def success(self) -> None:
        with self._lock:
            if self._opened_at is not None:
                log.info("circuit closed again after %d failed calls", self._failed)
            self._failed, self._opened_at = 0, None

    def failure(self) -> None:
        with self._lock:
            self._failed += 1
            if self._failed >= self.failures and self._opened_at is None:
                log.warning("circuit opens after %d failed calls in a row", self._failed)
            if self._failed >= self.failures:
                self._opened_at = time.monotonic()

    @property
    def open(self) -> bool:
        with self._lock:
            return self._opened_at is not None


class RemoteModel(BatchModel):
    """A model version scored by a server; feeds are built exactly as for a local ONNX model."""

    def __init__(
        self,
        endpoint: RemoteEndpoint,
        signature: Signature,
        *,
        source: str,
        feature_names: list[str] | None = None,
        transport: Transport | None = None,
    ) -> None:
        self.endpoint = endpoint
        self.signature = signature
        self.source = source
        self.feature_names = feature_names
        self.transport = transport or connect(endpoint)
        self.breaker = Breaker(endpoint.breaker_failures, endpoint.breaker_open_s)
        self.calls = 0

    def predict(self, batch: Batch, outputs: Sequence[str] | None = None) -> Feed:
        """Every (or the requested) output for ``batch``: one call, retried while retriable."""
        feed = self._feed(batch)
        raw = self.call(feed)
        names = outputs or self.signature.output_names
        missing = [name for name in names if name not in raw]
        if missing:
            raise RemoteError(f"{self.endpoint.describe} returned no output {missing}", retriable=False)
        return {name: raw[name] for name in names}

    def call(self, feed: Feed) -> Feed:
        e = self.endpoint
        attempt = 0
        while True:
            self.breaker.check(e.describe)
            self.calls += 1
            try:
                raw = self.transport.infer(feed, e.timeout_ms / 1000)
            except RemoteError as exc:
                self.breaker.failure()
                if not exc.retriable or attempt >= e.retries:
                    tries = f" after {attempt + 1} tries" if attempt else ""
                    raise RemoteError(f"{e.describe} failed{tries}: {exc.message}", retriable=exc.retriable) from None
                delay = e.backoff_ms / 1000 * 2**attempt * (0.5 + random.random())
                log.debug("retrying %s in %.0f ms: %s", e.describe, delay * 1e3, exc.message)
                time.sleep(delay)
                attempt += 1
                continue
            self.breaker.success()
            return raw

    def close(self) -> None:
        self.transport.close()


def connect(endpoint: RemoteEndpoint) -> Transport:
    """The transport ``endpoint`` asks for (its URL scheme and protocol)."""
    if endpoint.protocol == "v2":
        if endpoint.transport == "grpc":
            from streamml.inference.remote_v2 import V2Grpc

            return V2Grpc(endpoint)
        from streamml.inference.remote_v2 import V2Http

        return V2Http(endpoint)
    from streamml.inference.remote_tfserving import TfServingGrpc, TfServingHttp

    return TfServingGrpc(endpoint) if endpoint.transport == "grpc" else TfServingHttp(endpoint)


def describe(endpoint: RemoteEndpoint) -> tuple[Signature, OutputSpec]:
    """The signature a remote model declares (from the server's metadata) and PREDICT's output for it."""
    transport = connect(endpoint)
    try:
        try:
            inputs, outputs = transport.metadata(endpoint.timeout_ms / 1000)
        except RemoteError as exc:
            raise ModelError(f"cannot read the metadata of {endpoint.describe}: {exc.message}", hint=exc.hint) from None
    finally:
        transport.close()
    return Signature(inputs=inputs, outputs=outputs), raw_output(outputs)


def raw_output(outputs: list[TensorSpec]) -> OutputSpec:
    """PREDICT's fields for raw outputs: a scalar per row for ``[N]`` and ``[N, 1]`` tensors, an array of
    doubles for wider numeric ones."""
    fields = []
    for spec in outputs:
        dims = spec.shape[1:] if spec.shape is not None else [None]
        per_row = all(d == 1 for d in dims)  # [N] or [N, 1]: one value per row
        if not per_row and spec.dtype == "string":
            raise ModelError(f"output '{spec.name}' holds {dims} strings per row; PREDICT maps one string per row")
        if not per_row:
            sql = "ARRAY<DOUBLE>"
        elif spec.dtype == "string":
            sql = "VARCHAR"
        elif spec.dtype == "bool":
            sql = "BOOLEAN"
        elif spec.dtype.startswith(("int", "uint")):
            sql = "BIGINT"
        else:
            sql = "DOUBLE"
        fields.append(OutputField(name=spec.name, sql_type=sql))
    return OutputSpec(kind="raw", fields=fields)


def tensor_spec(name: str, datatype: str, shape: list[int] | None) -> TensorSpec:
    """A signature entry from OIP metadata (``-1`` for a variable dimension)."""
    dtype = _SIGNATURE_OF.get(datatype.upper())
    if dtype is None:
        raise ModelError(f"tensor '{name}' has datatype {datatype}, which streamml cannot feed")
    dims: list[Any] | None = [d if d >= 0 else None for d in shape] if shape is not None else None
    return TensorSpec(name=name, dtype=dtype, shape=dims)


def wire_array(array: np.ndarray) -> tuple[str, bytes]:
    """An input as (OIP datatype, raw little-endian bytes)."""
    return datatype_of(array), to_bytes(array)


def decoded(array: np.ndarray) -> np.ndarray:
    """BYTES outputs as text, as a local model's string outputs are."""
    if array.dtype != DATATYPES["BYTES"]:
        return array
    flat = array.reshape(-1)
    try:  # one Arrow cast for the whole tensor; bytes that are not UTF-8 are replaced, value by value
        text = pa.array(flat, pa.binary()).cast(pa.string()).to_numpy(zero_copy_only=False)
    except (pa.ArrowInvalid, pa.ArrowTypeError):
        text = np.asarray([v.decode(errors="replace") if isinstance(v, bytes) else v for v in flat], dtype=object)
    return np.asarray(text, dtype=object).reshape(array.shape)
