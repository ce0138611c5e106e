"""The data plane under every front end of ``streamml serve``: which models are served, readiness, inference.

Front ends (OIP v2 and TF Serving, REST and gRPC) only translate their protocol to these calls and map the
errors raised here to their own error shape: :class:`ModelNotFound` (404 / NOT_FOUND), :class:`NotReady`
(503 / UNAVAILABLE), :class:`~streamml.inference.tensors.InvalidTensor` (400 / INVALID_ARGUMENT) and
:class:`~streamml.errors.ModelError` from a model that fails on valid input (500 / INTERNAL). A model is
named as in SQL (``iris``, ``iris@staging``, ``iris:2``) or by name plus a version or an alias.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence

import numpy as np

from streamml.errors import RegistryError, StreamMLError
from streamml.inference.batching import AdaptiveBatcher
from streamml.inference.service import InferenceService, Served
from streamml.inference.tensors import InvalidTensor, Limits
from streamml.models.registry import ModelRef
from streamml.models.signature import TensorSpec

log = logging.getLogger(__name__)

Feed = dict[str, np.ndarray]


class ModelNotFound(StreamMLError):
    """No served model answers to the name (or version) asked for."""


class NotReady(StreamMLError):
    """The server is starting or draining."""


class DataPlane:
    """Resolves names to loaded versions, validates feeds against signatures, scores through the batcher."""

    def __init__(
        self,
        service: InferenceService,
        batcher: AdaptiveBatcher,
        *,
        models: Sequence[str] | None = None,
        limits: Limits | None = None,
        server_name: str = "streamml",
        server_version: str = "",
    ) -> None:
        self.service = service
        self.batcher = batcher
        self.only = set(models) if models else None
        self.limits = limits or Limits()
        self.server_name = server_name
        self.server_version = server_version
        self.ready = False
        self.draining = False
        #: models unloaded through the repository API: not served until loaded again
        self.unloaded: set[str] = set()

    # -- which models ---------------------------------------------------------------------------------
    def names(self) -> list[str]:
        """The model names this server may serve: every registered one, or those asked for."""
        names = self.service.registry.list()
        return [n for n in names if self.only is None or n in self.only]

    def served_names(self) -> list[str]:
        """The names served now: those of :meth:`names` not unloaded."""
        return [n for n in self.names() if n not in self.unloaded]

    def versions(self, name: str) -> list[int]:
        self._check_name(name)
        return [v.version for v in self.service.registry.versions(name)]

    def resolve(self, name: str, version: str | int | None = None, *, alias: str | None = None) -> Served:
        """The loaded version for ``name`` (``iris``, ``iris@staging``, ``iris:2``), a version or an alias."""
        if not self.ready or self.draining:
            raise NotReady("the server is " + ("draining" if self.draining else "still loading its models"))
        ref = _reference(name, version, alias)
        model = ModelRef.parse(ref).name
        self._check_name(model)
        if model in self.unloaded:
            raise ModelNotFound(
                f"model '{model}' is unloaded", hint=f"load it: POST /v2/repository/models/{model}/load"
            )
        try:
            return self.service.serve(ref)
        except RegistryError as exc:
            raise ModelNotFound(exc.message, hint=exc.hint) from None

    def _check_name(self, name: str) -> None:
        if self.only is not None and name not in self.only:
            raise ModelNotFound(f"model '{name}' is not served here", hint=f"served: {', '.join(sorted(self.only))}")

    async def load_model(self, name: str) -> None:
        """Serve ``name`` again (the repository extension's load): its version in force, loaded now."""
        self._check_name(name)
        if name not in self.names():
            raise ModelNotFound(f"no model '{name}' is registered")
        served = await asyncio.get_running_loop().run_in_executor(None, self.service.serve, name)
        self.unloaded.discard(name)
        log.info("loaded %s on request", served.label)

    def unload_model(self, name: str) -> None:
        """Stop serving ``name`` by any reference (the repository extension's unload) until it is loaded."""
        self._check_name(name)
        if name not in self.names():
            raise ModelNotFound(f"no model '{name}' is registered")
        self.unloaded.add(name)
        self.service.forget([ref for ref in self.service.serving() if ModelRef.parse(ref).name == name])
        log.info("unloaded '%s' on request", name)

    async def load(self) -> None:
        """Load the version in force of every served model (off the event loop); then the server is ready."""
        loop = asyncio.get_running_loop()
        for name in self.names():
            try:
                served = await loop.run_in_executor(None, self.service.serve, name)
            except StreamMLError as exc:
                log.error("model '%s' is not served: %s", name, exc)
                continue
            log.info("serving %s (%s)", served.label, served.model.signature.describe())
        self.ready = True

    # -- inference ------------------------------------------------------------------------------------
    async def infer(self, served: Served, feed: Feed) -> Feed:
        """The raw outputs of ``served`` for ``feed`` (checked against its signature first)."""
        checked = self.check(served, feed)
        outputs, _ = await self.batcher.infer(served, checked)
        return outputs

    def check(self, served: Served, feed: Feed) -> Feed:
        """``feed`` with every input the model declares, cast to its dtype, with matching rank and fixed dims."""
        specs = served.model.signature.inputs
        unknown = sorted(set(feed) - {s.name for s in specs})
        missing = [s.name for s in specs if s.name not in feed]
        if unknown or missing:
            expected = ", ".join(s.name for s in specs)
            raise InvalidTensor(
                f"{served.label} takes inputs [{expected}]"
                + (f"; missing {missing}" if missing else "")
                + (f"; unknown {unknown}" if unknown else "")
            )
        checked = {spec.name: _conform(served.label, spec, feed[spec.name]) for spec in specs}
        rows = {len(a) if a.ndim else 1 for a in checked.values()}
        if len(rows) > 1:
            raise InvalidTensor(f"{served.label}: inputs have different numbers of rows {sorted(rows)}")
        if rows and max(rows) > self.limits.max_batch_rows:
            raise InvalidTensor(f"{max(rows)} rows, more than the limit of {self.limits.max_batch_rows}")
        return checked


def _reference(name: str, version: str | int | None, alias: str | None) -> str:
    if version not in (None, "", 0, "0", -1, "-1"):
        text = str(version)
        if not text.isdigit():
            raise ModelNotFound(f"model '{name}' has no version '{text}'", hint="versions are positive integers")
        return f"{ModelRef.parse(name).name}:{text}"
    if alias:
        return f"{ModelRef.parse(name).name}@{alias}"
    return name


def _conform(label: str, spec: TensorSpec, array: np.ndarray) -> np.ndarray:
    shape = spec.shape
    if shape is not None:
        if array.ndim == len(shape) - 1 and len(shape) == 2 and isinstance(shape[1], int) and shape[1] == 1:
            array = array.reshape(-1, 1)  # a column for a [N, 1] input
        if array.ndim != len(shape):
            raise InvalidTensor(f"{label}: input '{spec.name}' has rank {len(shape)} {shape}, got {list(array.shape)}")
        for axis, (want, got) in enumerate(zip(shape, array.shape, strict=True)):
            if isinstance(want, int) and want > 0 and want != got:
                raise InvalidTensor(
                    f"{label}: input '{spec.name}' needs {want} at dimension {axis} ({shape}), got {list(array.shape)}"
                )
    if spec.dtype == "string":
        if array.dtype.kind not in "OUS":
            raise InvalidTensor(f"{label}: input '{spec.name}' takes strings (BYTES), got {array.dtype}")
        flat = array.reshape(-1)
        text = [v.decode(errors="replace") if isinstance(v, bytes) else str(v) for v in flat]
        return np.asarray(text, dtype=object).reshape(array.shape)
    if array.dtype.kind in "OUS":
        raise InvalidTensor(f"{label}: input '{spec.name}' takes {spec.dtype}, got strings")
    want_dtype = spec.numpy_dtype
    if array.dtype != want_dtype:
        if not np.can_cast(array.dtype, want_dtype, casting="same_kind") and array.dtype.kind != "b":
            raise InvalidTensor(f"{label}: input '{spec.name}' takes {spec.dtype}, got {array.dtype}")
        array = array.astype(want_dtype)
    return np.ascontiguousarray(array)
