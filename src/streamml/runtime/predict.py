"""``PREDICT('model', col, ...)``: model inference as a vectorised SQL function, with hot model swap.

A :class:`ModelProvider` binds the inference service (:mod:`streamml.inference`: versions loaded once per
process, promotions checked before they take over, refusals kept for ``status``) to SQL. The version a query
uses is pinned for a whole micro-batch (per thread, so queries running side by side switch independently).
Promotions and rollbacks arrive as events on the control topic; the new version is loaded and checked in the
background and takes over at the next batch boundary. Rows with a NULL or NaN feature are set aside as
failures of the predict stage instead of failing the batch.
"""

from __future__ import annotations

import functools
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from streamml.config import Settings
from streamml.errors import ModelError, SqlError
from streamml.inference.remote import RemoteError
from streamml.inference.service import InferenceService, Served
from streamml.models.events import ModelEvent
from streamml.models.registry import Registry
from streamml.runtime.control import ControlFollower, follow_control
from streamml.sql import SqlEngine, SqlType, UserFunction, parse_type

log = logging.getLogger(__name__)

#: every PREDICT error message starts with this, naming the model reference
FAILURE_PREFIX = "PREDICT("

#: ``reject(mask, reason)``: sets the rows in ``mask`` aside as failures of the predict stage
Reject = Callable[[np.ndarray, str], None]


class ModelProvider:
    """Model versions for ``PREDICT`` in this process: load once, pin per batch, swap at batch boundaries."""

    def __init__(self, registry: Registry, threads: int = 1, service: InferenceService | None = None) -> None:
        self.service = service or InferenceService(registry, threads=threads, strict=True)
        self.registry = self.service.registry
        self._local = threading.local()

    @property
    def refusals(self) -> list[str]:
        return self.service.refusals

    def serve(self, ref: str) -> Served:
        """The version serving ``ref`` (loading it on first use)."""
        return self.service.serve(ref)

    # -- batches ------------------------------------------------------------------------------------------
    def at_batch_boundary(self) -> dict[str, str]:
        """Switch to promoted versions and pin the serving ones for this thread's next batch."""
        pinned = self.service.swap()
        self._local.pinned = pinned
        return {ref: s.label for ref, s in pinned.items()}

    @property
    def loaded(self) -> list[str]:
        """The model versions this provider holds in memory."""
        return self.service.loaded

    def predict(self, ref: str, columns: list[pa.Array], reject: Reject | None = None) -> pa.StructArray:
        """Score one batch with the version pinned for ``ref`` in this thread.

        Rows with a NULL or NaN feature are not scored: they are handed to ``reject`` (and come out NULL), or,
        without ``reject``, fail the call.
        """
        pinned: dict[str, Served] = getattr(self._local, "pinned", {})
        served = pinned.get(ref) or self.serve(ref)
        width = served.width
        if width is not None and len(columns) != width:
            raise ModelError(f"{FAILURE_PREFIX}'{ref}'): {served.label} reads {width} features, got {len(columns)}")
        window = served.window
        if window is not None:
            steps = {c.type.list_size if pa.types.is_fixed_size_list(c.type) else None for c in columns}
            if steps != {window}:
                raise ModelError(
                    f"{FAILURE_PREFIX}'{ref}'): {served.label} reads windows of {window} readings",
                    hint=f"call it OVER (PARTITION BY key ROWS {window - 1} PRECEDING)",
                )
        valid = _complete(ref, columns, reject)
        if valid is not None and not valid.any():
            return pa.nulls(len(valid), _arrow_type(served.sql_type))
        kept = columns if valid is None else [column.filter(pa.array(valid)) for column in columns]
        try:
            scored = self._score(ref, served, kept)
        except RemoteError as exc:  # the model server failed for good: the rows become dead letters, not an error
            if reject is None:
                raise
            rows = valid if valid is not None else np.ones(len(columns[0]) if columns else 0, dtype=bool)
            reject(rows, str(exc))
            return pa.nulls(len(rows), _arrow_type(served.sql_type))
        if valid is None:
            return scored
        return scored.take(pa.array(np.cumsum(valid) - 1, mask=~valid))  # NULL where rejected

    def _score(self, ref: str, served: Served, columns: list[pa.Array]) -> pa.StructArray:
        started = time.perf_counter()
        try:
            raw = self.service.score(served, columns)
        except RemoteError as exc:
            raise RemoteError(f"{FAILURE_PREFIX}'{ref}') with {exc}", retriable=exc.retriable) from None
        except ModelError as exc:
            raise ModelError(f"{FAILURE_PREFIX}'{ref}') with {exc}") from None
        finally:
            self._local.model_seconds = getattr(self._local, "model_seconds", 0.0) + time.perf_counter() - started
        struct = served.version.card.postprocess(raw)
        n = len(struct)
        arrays = [struct.field(i) for i in range(struct.type.num_fields)]
        arrays += [pa.array(np.full(n, served.version.name, dtype=object), pa.string()),
                   pa.array(np.full(n, served.version.version, dtype=np.int32))]  # fmt: skip
        target = _arrow_type(served.sql_type)  # field names as SQL spells them (upper case)
        return pa.StructArray.from_arrays(
            [a.cast(f.type) for a, f in zip(arrays, target, strict=True)], fields=list(target)
        )

    def take_model_seconds(self) -> float:
        """Inference time spent by this thread since the last call."""
        spent = float(getattr(self._local, "model_seconds", 0.0))
        self._local.model_seconds = 0.0
        return spent

    # -- promotions ---------------------------------------------------------------------------------------
    def on_event(self, event: ModelEvent) -> None:
        """React to a control-topic event: prepare the successor of every reference it moves."""
        self.service.prepare(event)

    # -- SQL ----------------------------------------------------------------------------------------------
    def function(self) -> UserFunction:
        """The ``PREDICT`` SQL function bound to this provider."""

        def result_type(arg_types: list[SqlType], constants: list[Any]) -> SqlType:
            if not constants or not isinstance(constants[0], str):
                raise ModelError("PREDICT needs the model as a string literal first: PREDICT('fraud', col, ...)")
            served = self.serve(constants[0])
            windowed = any(t.name == "ARRAY" for t in arg_types[1:])
            if served.window is not None and not windowed:
                raise SqlError(
                    f"model {served.label} reads windows of {served.window} readings of one key",
                    hint=f"call it OVER (PARTITION BY key ROWS {served.window - 1} PRECEDING)",
                )
            return parse_type(served.sql_type)

        def predict(model: pa.Array, *columns: pa.Array, reject: Reject) -> pa.StructArray:
            ref = model[0].as_py() if len(model) else ""
            return self.predict(str(ref), list(columns), reject)

        def features(constants: list[Any]) -> list[str]:
            served = self.serve(str(constants[0]))
            names = served.version.card.features or served.model.input_names
            if not names:
                raise ModelError(f"model {served.label} names no input features", hint="pass the columns explicitly")
            return list(names)

        return UserFunction(
            name="PREDICT",
            func=predict,
            returns=result_type,
            description="PREDICT('model'[, col, ...]): score with a registered model version",
            expand=features,
            stage="predict",
            rejects=True,
            window=lambda constants: self.serve(str(constants[0])).window if constants and constants[0] else None,
        )

    def install(self, engine: SqlEngine) -> None:
        engine.functions.add(self.function())


@functools.lru_cache(maxsize=64)
def _arrow_type(sql_type: str) -> pa.StructType:
    return parse_type(sql_type).to_arrow()


def _complete(ref: str, columns: list[pa.Array], reject: Reject | None) -> np.ndarray | None:
    """Which rows have every feature (not NULL, not NaN), vectorised; None when all of them do.

    The others are handed to ``reject`` with the first missing feature as the reason (without ``reject``,
    a ``ModelError`` names the first such feature).
    """
    valid: np.ndarray | None = None
    for i, column in enumerate(columns):
        if not column.null_count and not pa.types.is_floating(column.type):
            continue
        present = ~np.asarray(pc.is_null(column, nan_is_null=True).to_numpy(zero_copy_only=False), bool)
        if present.all():
            continue
        missing = ~present if valid is None else valid & ~present
        message = f"{FAILURE_PREFIX}'{ref}'): feature {i + 1} is NULL or NaN"
        if reject is None:
            raise ModelError(f"{message} in {int((~present).sum())} rows")
        reject(missing, message)
        valid = present if valid is None else valid & present
    return valid


def provider_for(settings: Settings, follow: bool = True) -> tuple[ModelProvider, ControlFollower | None]:
    """A provider over the configured registry, following the control topic when ``follow``."""
    provider = ModelProvider(Registry(settings.registry_root))
    follower = follow_control(settings, provider.on_event) if follow else None
    return provider, follower
