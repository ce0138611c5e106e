"""Inference on whole batches with ONNX Runtime.

An :class:`OnnxModel` loads its artifact once and then scores batches: a 2-D array, a sequence of columns
(as a SQL ``PREDICT(model, col, ...)`` call passes them), a mapping of name -> column, or an Arrow table.
A model with one input per feature column (``[N, 1]`` each, float or string, as the tabular recipe exports)
takes the same sequence of columns: each feeds the input of its name. There is no per-row Python work:
columns are stacked and cast in one NumPy call per batch.

    >>> model = OnnxModel.load("model.onnx")                          # doctest: +SKIP
    >>> model.predict(np.zeros((4, 30), dtype=np.float32))["score"]   # doctest: +SKIP
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, TypeAlias

import fsspec
import numpy as np
import onnxruntime as ort
import pyarrow as pa

from streamml.errors import ModelError
from streamml.models.signature import Signature, TensorSpec

logger = logging.getLogger(__name__)

Batch: TypeAlias = np.ndarray | Sequence[Any] | Mapping[str, Any] | pa.Table | pa.RecordBatch


def select_providers(device: str = "cpu", providers: Sequence[str] | None = None) -> list[str]:
    """Execution providers for ``device`` (``cpu``, ``cuda`` or ``auto``); explicit ``providers`` win.

    ``cuda`` falls back to the CPU, with a warning, when the CUDA provider is not installed.
    """
    if providers:
        return list(providers)
    available = ort.get_available_providers()
    if device == "cpu":
        return ["CPUExecutionProvider"]
    if device in ("cuda", "gpu", "auto"):
        if "CUDAExecutionProvider" in available:
            return ["CUDAExecutionProvider", "CPUExecutionProvider"]
        if device != "auto":
            logger.warning("CUDAExecutionProvider is not available (have %s); using the CPU", available)
        return ["CPUExecutionProvider"]
    raise ModelError(f"unknown inference device '{device}'", hint="use cpu, cuda or auto")


def read_artifact(source: str | os.PathLike[str] | bytes) -> tuple[bytes, str]:
    """The bytes of an ONNX artifact and a label for messages; ``source`` is bytes, a path or an fsspec URL."""
    if isinstance(source, bytes | bytearray | memoryview):
        return bytes(source), "<bytes>"
    label = os.fspath(source)
    try:
        with fsspec.open(label, "rb") as handle:
            return handle.read(), label
    except (OSError, ValueError) as exc:
        raise ModelError(f"cannot read model file '{label}': {exc}") from exc


class BatchModel:
    """A model scored a batch at a time: any batch form (array, columns, mapping, Arrow table) becomes the
    feed its signature takes. Local ONNX models and models on a server share it, so both read ``PREDICT``'s
    columns alike.
    """

    signature: Signature
    source: str
    feature_names: list[str] | None

    def predict(self, batch: Batch, outputs: Sequence[str] | None = None) -> dict[str, np.ndarray]:
        """Score a batch; returns every (or the requested) output by name, one row per input row."""
        raise NotImplementedError

    @property
    def input_names(self) -> list[str]:
        return self.signature.input_names

    @property
    def output_names(self) -> list[str]:
        return self.signature.output_names

    def zeros(self, rows: int = 1) -> dict[str, np.ndarray]:
        """An all-zero feed of ``rows`` rows that matches the signature (a smoke test input)."""
        return {spec.name: _zeros(spec, rows) for spec in self.signature.inputs}

    # -- feeding -----------------------------------------------------------------------------------
    def _feed(self, batch: Batch) -> dict[str, np.ndarray]:
        specs = self.signature.inputs
        if isinstance(batch, np.ndarray):
            if len(specs) == 1 and batch.dtype == np.float32 and specs[0].dtype == "float32" and batch.ndim > 1:
                return {specs[0].name: batch}  # fast path: already what the model takes
            if len(specs) != 1:
                raise ModelError(f"model '{self.source}' has {len(specs)} inputs {self.input_names}; pass a mapping")
            return {specs[0].name: _cast(batch, specs[0])}
        if isinstance(batch, pa.Table | pa.RecordBatch):
            names = self.feature_names if len(specs) == 1 else self.input_names
            present = set(batch.column_names)
            if names is None or not present.issuperset(names):
                names = batch.column_names
            batch = {name: batch.column(name) for name in names}
        if isinstance(batch, Mapping):
            return self._feed_mapping(batch)
        if len(specs) != 1:
            return self._feed_mapping(self._by_input(list(batch)))
        return {specs[0].name: _stack(list(batch), specs[0])}

    def _by_input(self, columns: list[Any]) -> dict[str, Any]:
        """Columns given in order (as ``PREDICT`` passes them) named for a model with one input per column.

        They follow ``feature_names`` when those name the inputs (in any order), else the inputs' order.
        """
        names = self.input_names
        if self.feature_names is not None and sorted(self.feature_names) == sorted(names):
            names = self.feature_names
        if len(columns) != len(names):
            raise ModelError(
                f"model '{self.source}' has {len(names)} inputs, got {len(columns)} columns",
                hint=f"pass the columns {names} in this order, or a mapping of name -> column",
            )
        return dict(zip(names, columns, strict=True))

    def _feed_mapping(self, batch: Mapping[str, Any]) -> dict[str, np.ndarray]:
        specs = self.signature.inputs
        if len(specs) > 1:
            missing = [spec.name for spec in specs if spec.name not in batch]
            if missing:
                raise ModelError(f"model '{self.source}' needs inputs {missing}")
            return {spec.name: _cast(_as_array(batch[spec.name]), spec) for spec in specs}
        spec, names = specs[0], self.feature_names
        if names is not None and all(name in batch for name in names):
            return {spec.name: _stack([batch[name] for name in names], spec)}
        if spec.name in batch:
            return {spec.name: _cast(_as_array(batch[spec.name]), spec)}
        if names is None:
            return {spec.name: _stack(list(batch.values()), spec)}
        missing = [name for name in names if name not in batch]
        raise ModelError(f"model '{self.source}' needs columns {missing}", hint=f"it reads {names}")


class OnnxModel(BatchModel):
    """An ONNX model loaded once into an ``onnxruntime.InferenceSession``; scores whole batches.

    ``feature_names`` (usually the model card's ``features``) name the columns stacked into a single 2-D
    input when the batch is given as a mapping or an Arrow table.
    """

    def __init__(
        self,
        artifact: bytes,
        *,
        source: str = "<bytes>",
        threads: int = 1,
        device: str = "cpu",
        providers: Sequence[str] | None = None,
        feature_names: Sequence[str] | None = None,
    ) -> None:
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.log_severity_level = 3
        try:
            self._session = ort.InferenceSession(
                artifact, sess_options=options, providers=select_providers(device, providers)
            )
        except Exception as exc:  # onnxruntime raises its own exception types
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise ModelError(f"cannot load ONNX model '{source}': {first}") from exc
        self.source = source
        self.signature = Signature.from_session(self._session)
        self.feature_names = list(feature_names) if feature_names is not None else None
        self.providers: list[str] = list(self._session.get_providers())
        self._output_names = self.signature.output_names
        logger.debug("loaded %s (%s) on %s", source, self.signature.describe(), self.providers)

    @classmethod
    def load(
        cls,
        source: str | os.PathLike[str] | bytes,
        *,
        threads: int = 1,
        device: str = "cpu",
        providers: Sequence[str] | None = None,
        feature_names: Sequence[str] | None = None,
    ) -> OnnxModel:
        """Load an artifact from bytes, a path or an fsspec URL; :class:`ModelError` names a bad file."""
        artifact, label = read_artifact(source)
        return cls(
            artifact,
            source=label,
            threads=threads,
            device=device,
            providers=providers,
            feature_names=feature_names,
        )

    def predict(self, batch: Batch, outputs: Sequence[str] | None = None) -> dict[str, np.ndarray]:
        """Score a batch; returns every (or the requested) output by name, one row per input row."""
        feed = self._feed(batch)
        try:
            results = self._session.run(list(outputs) if outputs else None, feed)
        except Exception as exc:
            raise ModelError(f"inference failed for model '{self.source}': {exc}") from exc
        names = list(outputs) if outputs else self._output_names
        return dict(zip(names, results, strict=True))


_PLAIN_NUMERIC = frozenset([pa.float64(), pa.float32(), pa.int64(), pa.int32()])


def _as_array(column: Any) -> np.ndarray:
    """A NumPy view of one column; Arrow nulls become NaN, list columns become 2-D arrays."""
    if isinstance(column, pa.ChunkedArray):
        column = column.chunk(0) if column.num_chunks == 1 else column.combine_chunks()
    if isinstance(column, pa.DictionaryArray):
        column = column.dictionary_decode()
    if isinstance(column, pa.Array):
        if column.null_count == 0 and column.type in _PLAIN_NUMERIC:
            return column.to_numpy()
        if pa.types.is_list(column.type) or pa.types.is_large_list(column.type):
            values = column.flatten().to_numpy(zero_copy_only=False)
            return values.reshape(len(column), -1) if len(column) else values.reshape(0, 0)
        if pa.types.is_fixed_size_list(column.type):
            values = column.flatten().to_numpy(zero_copy_only=False)
            return values.reshape(len(column), column.type.list_size)
        if column.null_count and (pa.types.is_integer(column.type) or pa.types.is_floating(column.type)):
            column = column.cast(pa.float64())
        return column.to_numpy(zero_copy_only=False)
    return np.asarray(column)


def _stack(columns: list[Any], spec: TensorSpec) -> np.ndarray:
    arrays = [_as_array(column) for column in columns]
    if len(arrays) == 1 and arrays[0].ndim >= 2:
        return _cast(arrays[0], spec)
    if spec.shape is not None and len(spec.shape) == 3 and arrays and all(a.ndim == 2 for a in arrays):
        return _cast(np.stack(arrays, axis=-1), spec)  # one window per feature: [rows, steps, features]
    if spec.dtype == "string":
        return _cast(np.column_stack([a.astype(object) for a in arrays]), spec)
    return _cast(np.column_stack(arrays), spec)


def _cast(array: np.ndarray, spec: TensorSpec) -> np.ndarray:
    if spec.dtype == "string":
        array = np.asarray(array)
        array = array.astype(str).astype(object) if array.dtype.kind not in "OUS" else array.astype(object)
    else:
        array = np.asarray(array, dtype=spec.numpy_dtype)
    shape = spec.shape
    if shape is not None and array.ndim == 1 and len(shape) == 2:
        array = array.reshape(-1, 1)
    elif shape is not None and len(shape) > 2 and array.ndim == 2:
        fixed = [d if isinstance(d, int) else -1 for d in shape[1:]]
        array = array.reshape(array.shape[0], *fixed)
    return np.ascontiguousarray(array)


def _zeros(spec: TensorSpec, rows: int) -> np.ndarray:
    dims = [rows if i == 0 else (d if isinstance(d, int) and d > 0 else 1) for i, d in enumerate(spec.shape or [])]
    if spec.dtype == "string":
        return np.full(dims or [rows], "", dtype=object)
    return np.zeros(dims or [rows], dtype=spec.numpy_dtype)


def load_model(path: str | Path, **options: Any) -> OnnxModel:
    """Shorthand for :meth:`OnnxModel.load`."""
    return OnnxModel.load(path, **options)
