"""The one inference service: model versions from the registry, loaded once, scored in batches, swapped live.

PREDICT in a stream and the model server both score through an :class:`InferenceService`; neither knows
Kafka nor HTTP here. A reference (``fraud``, ``fraud@staging``, ``fraud:3``) resolves to the version in force;
a promotion is loaded and checked before it takes over (:meth:`InferenceService.prepare`), and the swap
happens when the caller says (:meth:`InferenceService.swap`: at a batch boundary for a stream, at once for a
server). A version that does not load, or (with ``strict``) whose inputs or outputs differ from the one
serving, is refused: the old version keeps serving and the refusal is kept for ``status``. Versions no
reference serves any more are unloaded. Every score is counted in :class:`~streamml.inference.metrics.Metrics`.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from streamml.errors import ModelError, StreamMLError
from streamml.inference.metrics import Metrics
from streamml.inference.remote import RemoteError, RemoteModel
from streamml.models.events import ModelEvent
from streamml.models.registry import ModelRef, ModelVersion, Registry
from streamml.models.runtime import BatchModel

log = logging.getLogger(__name__)

#: fields PREDICT adds to every model's own output fields, so each output value names its scorer
PROVENANCE = (("model", "VARCHAR"), ("version", "INTEGER"))


@dataclass(frozen=True)
class Served:
    """One loaded model version."""

    version: ModelVersion
    model: BatchModel

    @property
    def label(self) -> str:
        return f"{self.version.name}:{self.version.version}"

    @property
    def sql_type(self) -> str:
        """PREDICT's result type: the card's output fields and the provenance fields."""
        fields = self.version.card.sql_type.removeprefix("STRUCT<").removesuffix(">")
        return f"STRUCT<{fields}, " + ", ".join(f"{n} {t}" for n, t in PROVENANCE) + ">"

    @property
    def width(self) -> int | None:
        """How many feature columns the model reads, when its signature says so."""
        inputs = self.model.signature.inputs
        if len(inputs) == 1 and inputs[0].shape and len(inputs[0].shape) in (2, 3):
            dim = inputs[0].shape[-1]
            return dim if isinstance(dim, int) else None
        return None

    @property
    def window(self) -> int | None:
        """How many readings a sequence model (input ``[N, steps, features]``) reads per window."""
        inputs = self.model.signature.inputs
        if len(inputs) == 1 and inputs[0].shape and len(inputs[0].shape) == 3:
            dim = inputs[0].shape[1]
            return dim if isinstance(dim, int) else None
        return None


class InferenceService:
    """Loaded model versions by reference, their promotions and their metrics; thread-safe.

    ``strict`` refuses a successor whose signature or output type differs from the serving version (a stream's
    output type is fixed); a server passes ``strict=False`` and serves whatever was promoted.
    """

    def __init__(
        self, registry: Registry, *, threads: int = 1, strict: bool = True, metrics: Metrics | None = None
    ) -> None:
        self.registry = registry
        self.threads = threads
        self.strict = strict
        self.metrics = metrics or Metrics()
        self._lock = threading.Lock()
        self._active: dict[str, Served] = {}  # reference -> version serving it
        self._pending: dict[str, Served] = {}  # validated successors waiting for swap()
        self._cache: dict[str, Served] = {}  # 'name:version' -> loaded once
        self.refusals: list[str] = []

    # -- loading ------------------------------------------------------------------------------------------
    def load(self, version: ModelVersion) -> Served:
        """``version`` loaded (once per service) and smoke-tested on one all-zero row."""
        key = f"{version.name}:{version.version}"
        with self._lock:
            if key in self._cache:
                return self._cache[key]
        if version.card.remote is not None:  # scored by a server: nothing to load, no call before the first batch
            assert version.card.signature is not None
            features = version.card.features or None
            model: BatchModel = RemoteModel(
                version.card.remote, version.card.signature, source=version.ref, feature_names=features
            )
        else:
            model = version.load(threads=self.threads)
            model.predict(model.zeros(1))  # a version that cannot score one row is not served
        served = Served(version, model)
        with self._lock:
            self._cache.setdefault(key, served)
            return self._cache[key]

    def serve(self, ref: str) -> Served:
        """The version serving ``ref``, loading it on first use (:class:`RegistryError` when unknown)."""
        with self._lock:
            served = self._active.get(ref)
        if served is None:
            served = self.load(self.registry.get(ref))
            with self._lock:
                served = self._active.setdefault(ref, served)
        return served

    def serving(self) -> dict[str, Served]:
        """Every reference in use and the version serving it."""
        with self._lock:
            return dict(self._active)

    @property
    def loaded(self) -> list[str]:
        """The model versions held in memory."""
        with self._lock:
            return sorted(self._cache)

    # -- scoring ------------------------------------------------------------------------------------------
    def score(self, served: Served, feed: dict[str, np.ndarray] | list[pa.Array]) -> dict[str, np.ndarray]:
        """Raw outputs of one batch, counted in the metrics; :class:`ModelError` names the version."""
        rows = _rows(feed)
        started = time.perf_counter()
        try:
            raw = served.model.predict(feed)
        except RemoteError as exc:
            raise RemoteError(f"{served.label} could not score {rows} rows: {exc}", retriable=exc.retriable) from None
        except Exception as exc:
            raise ModelError(f"{served.label} could not score {rows} rows: {exc}") from None
        self.metrics.executed(served.version, rows, time.perf_counter() - started)
        return raw

    # -- promotions ---------------------------------------------------------------------------------------
    def prepare(self, event: ModelEvent) -> list[str]:
        """Load and check the successor of every reference ``event`` moves; returns the references it moved."""
        with self._lock:
            refs = [ref for ref in self._active if moves(ref, event)]
        return [ref for ref in refs if self._prepare(ref, describe=f"{event.model}:{event.version}")]

    def refresh(self) -> list[str]:
        """Re-resolve every moving reference against the registry (for a caller without the control topic)."""
        moved: list[str] = []
        for ref, current in self.serving().items():
            if ModelRef.parse(ref).version is not None:
                continue
            try:
                version = self.registry.get(ref)
            except StreamMLError as exc:
                log.warning("cannot refresh '%s': %s; keeping %s", ref, exc, current.label)
                continue
            if version.version != current.version.version and self._prepare(ref, describe=version.ref):
                moved.append(ref)
        return moved

    def _prepare(self, ref: str, *, describe: str) -> bool:
        try:
            candidate = self.load(self.registry.get(ref))
        except StreamMLError as exc:
            return self._refuse(ref, describe, str(exc))
        except Exception as exc:
            return self._refuse(ref, describe, f"cannot load: {exc}")
        with self._lock:
            current = self._active[ref]
        problem = incompatible(current, candidate) if self.strict else None
        if problem:
            return self._refuse(ref, describe, problem)
        if candidate.label == current.label:
            return False
        with self._lock:
            self._pending[ref] = candidate
        return True

    def swap(self) -> dict[str, Served]:
        """Put prepared successors in force, unload what nothing serves; returns every reference in force."""
        with self._lock:
            if self._pending:
                for ref, served in self._pending.items():
                    old = self._active.get(ref)
                    log.info("'%s' now served by %s (was %s)", ref, served.label, old.label if old else "-")
                    self._active[ref] = served
                self._pending.clear()
                self._evict()
            return dict(self._active)

    def forget(self, refs: Iterable[str]) -> None:
        """Stop serving ``refs`` (and unload what no other reference serves)."""
        with self._lock:
            for ref in refs:
                self._active.pop(ref, None)
                self._pending.pop(ref, None)
            self._evict()

    def _evict(self) -> None:
        """Forget loaded versions no reference serves or waits for; a caller still holding one keeps it until
        it lets go. Called with the lock held."""
        in_force = {s.label for s in (*self._active.values(), *self._pending.values())}
        for label in [label for label in self._cache if label not in in_force]:
            del self._cache[label]
            log.info("unloaded %s: no reference serves it any more", label)

    def _refuse(self, ref: str, describe: str, reason: str) -> bool:
        message = f"refused {describe} for '{ref}': {reason}; keeping the serving version"
        log.error(message)
        with self._lock:
            self.refusals.append(message)
        return False


def moves(ref: str, event: ModelEvent) -> bool:
    """Whether ``event`` moves what ``ref`` resolves to (a pinned ``name:version`` never moves)."""
    parsed = ModelRef.parse(ref)
    if parsed.name != event.model or parsed.version is not None:
        return False
    return (parsed.alias or "production") == (event.alias or "")


def incompatible(current: Served, candidate: Served) -> str | None:
    """Why ``candidate`` cannot replace ``current`` under a fixed output type, or None."""
    shape = (candidate.width, candidate.window, len(candidate.model.signature.inputs))
    if shape != (current.width, current.window, len(current.model.signature.inputs)):
        return f"its inputs ({candidate.model.signature}) do not match the serving {current.label}"
    if candidate.sql_type != current.sql_type:
        return f"its output {candidate.sql_type} differs from {current.sql_type}"
    return None


def _rows(feed: dict[str, np.ndarray] | list[pa.Array]) -> int:
    first = next(iter(feed.values())) if isinstance(feed, dict) else (feed[0] if feed else None)
    return len(first) if first is not None else 0
