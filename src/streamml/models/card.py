"""The model card: everything known about one model version, stored as ``card.json`` next to the artifact.

The card says what the model reads (``features``, ``signature``), where its training data came from
(``lineage``: topic, partitions, offsets, the SQL that built the features), how good it is (``metrics``,
``parity``), what SQL sees when it calls ``PREDICT`` (``output``: a STRUCT type and a vectorised
:meth:`ModelCard.postprocess`) and what the data looked like (``reference`` statistics, for drift checks).
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any, Literal

import numpy as np
import pyarrow as pa
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from streamml.errors import ModelError
from streamml.models.signature import Signature
from streamml.models.stats import ReferenceStats

OutputKind = Literal["anomaly", "classifier", "regression", "raw"]

_SQL_TO_ARROW: dict[str, pa.DataType] = {
    "DOUBLE": pa.float64(),
    "BOOLEAN": pa.bool_(),
    "VARCHAR": pa.string(),
    "BIGINT": pa.int64(),
    "ARRAY<DOUBLE>": pa.list_(pa.float64()),
}


class OutputField(BaseModel):
    """One field of the STRUCT that ``PREDICT`` returns."""

    model_config = ConfigDict(frozen=True)

    name: str
    sql_type: str

    @property
    def arrow_type(self) -> pa.DataType:
        return _SQL_TO_ARROW[self.sql_type]


class OutputSpec(BaseModel):
    """How raw model outputs become SQL values.

    - ``anomaly``: ``score DOUBLE, is_anomaly BOOLEAN`` from the output ``score_output``.
    - ``classifier``: ``label VARCHAR, probability DOUBLE, probabilities ARRAY<DOUBLE>`` from the
      probability output; with a decision threshold and a ``positive_label`` (binary case), the positive
      class wins when its probability reaches the threshold.
    - ``regression``: ``prediction DOUBLE``.
    - ``raw``: every model output as its own field.
    """

    model_config = ConfigDict(frozen=True)

    kind: OutputKind
    fields: list[OutputField]
    score_output: str | None = None
    classes: list[str] | None = None
    positive_label: str | None = None

    @classmethod
    def anomaly(cls, score_output: str = "score") -> OutputSpec:
        return cls(
            kind="anomaly",
            score_output=score_output,
            fields=[OutputField(name="score", sql_type="DOUBLE"), OutputField(name="is_anomaly", sql_type="BOOLEAN")],
        )

    @classmethod
    def classifier(
        cls, classes: list[str], probability_output: str = "probabilities", positive_label: str | None = None
    ) -> OutputSpec:
        return cls(
            kind="classifier",
            score_output=probability_output,
            classes=[str(c) for c in classes],
            positive_label=positive_label,
            fields=[
                OutputField(name="label", sql_type="VARCHAR"),
                OutputField(name="probability", sql_type="DOUBLE"),
                OutputField(name="probabilities", sql_type="ARRAY<DOUBLE>"),
            ],
        )

    @classmethod
    def regression(cls, output: str = "variable") -> OutputSpec:
        return cls(kind="regression", score_output=output, fields=[OutputField(name="prediction", sql_type="DOUBLE")])

    @property
    def sql_type(self) -> str:
        """The SQL type of ``PREDICT``'s result, e.g. ``STRUCT<score DOUBLE, is_anomaly BOOLEAN>``."""
        return "STRUCT<" + ", ".join(f"{f.name} {f.sql_type}" for f in self.fields) + ">"

    @property
    def arrow_type(self) -> pa.StructType:
        return pa.struct([pa.field(f.name, f.arrow_type) for f in self.fields])

    def postprocess(self, raw: dict[str, np.ndarray], threshold: float | None = None) -> pa.StructArray:
        """Turn one batch of raw outputs into a StructArray of :attr:`fields` (vectorised)."""
        if self.kind == "raw":
            return _raw_struct(raw)
        output = self.score_output or next(iter(raw))
        if output not in raw:
            raise ModelError(f"model output '{output}' is missing; the model returned {sorted(raw)}")
        values = np.asarray(raw[output])
        if self.kind == "anomaly":
            score = values.reshape(len(values), -1)[:, 0].astype(np.float64)
            flags = pa.array(score >= threshold) if threshold is not None else pa.nulls(len(score), pa.bool_())
            arrays: list[pa.Array] = [pa.array(score), flags]
        elif self.kind == "regression":
            arrays = [pa.array(values.reshape(len(values), -1)[:, 0].astype(np.float64))]
        else:
            arrays = self._classify(values, threshold)
        return pa.StructArray.from_arrays(arrays, fields=list(self.arrow_type))

    def _classify(self, probs: np.ndarray, threshold: float | None) -> list[pa.Array]:
        probs = np.asarray(probs, dtype=np.float64)
        if probs.ndim == 1 or probs.shape[1] == 1:  # P(positive) only
            positive = probs.reshape(-1)
            probs = np.column_stack([1.0 - positive, positive])
        rows, width = probs.shape
        classes = np.asarray(self.classes or [str(i) for i in range(width)], dtype=object)
        if len(classes) != width:
            raise ModelError(f"the model returned {width} probabilities but the card lists {len(classes)} classes")
        best = probs.argmax(axis=1)
        if threshold is not None and self.positive_label is not None and width == 2:
            pos = int(np.flatnonzero(classes == self.positive_label)[0])
            best = np.where(probs[:, pos] >= threshold, pos, 1 - pos)
        offsets = pa.array(np.arange(0, rows * width + 1, width, dtype=np.int32))
        return [
            pa.array(classes[best], type=pa.string()),
            pa.array(probs[np.arange(rows), best]),
            pa.ListArray.from_arrays(offsets, pa.array(probs.ravel())),
        ]


def _raw_struct(raw: dict[str, np.ndarray]) -> pa.StructArray:
    arrays, names = [], []
    for name, raw_value in raw.items():
        value = np.asarray(raw_value)
        if value.ndim > 1 and all(d == 1 for d in value.shape[1:]):  # [N, 1]: one value per row
            value = value.reshape(len(value))
        if value.ndim > 1 and value.dtype.kind in "OUS":
            raise ModelError(f"model output '{name}' holds {list(value.shape[1:])} strings per row; PREDICT maps "
                             "one string per row")  # fmt: skip
        if value.ndim > 1:
            width = int(np.prod(value.shape[1:]))
            offsets = pa.array(np.arange(0, len(value) * width + 1, width, dtype=np.int32))
            arrays.append(pa.ListArray.from_arrays(offsets, pa.array(value.reshape(-1).astype(np.float64))))
        else:
            arrays.append(pa.array(value if value.dtype != object else value.astype(str)))
        names.append(name)
    return pa.StructArray.from_arrays(arrays, names=names)


class PartitionRange(BaseModel):
    """Offsets ``[start, end)`` read from one partition."""

    model_config = ConfigDict(frozen=True)

    partition: int
    start: int
    end: int


class Lineage(BaseModel):
    """Where the training data came from."""

    model_config = ConfigDict(frozen=True)

    source: str | None = None
    partitions: list[PartitionRange] = []
    time_start: datetime | None = None
    time_end: datetime | None = None
    sql: str | None = None
    value_schema: str | dict[str, Any] | None = None
    rows: int | None = None


class Parity(BaseModel):
    """Framework output vs ONNX Runtime output on held-out rows."""

    model_config = ConfigDict(frozen=True)

    max_abs_diff: float
    tolerance: float = 1e-4
    rows: int = 0
    output: str | None = None

    @property
    def passed(self) -> bool:
        return bool(np.isfinite(self.max_abs_diff)) and self.max_abs_diff <= self.tolerance


class RemoteEndpoint(BaseModel):
    """Where a remote version is scored: a model server speaking OIP v2 or TF Serving, over REST or gRPC.

    ``url`` is ``http(s)://host:port`` for REST or ``grpc://host:port`` for gRPC; ``model`` and ``version``
    name the model on that server. Each call has ``timeout_ms``; a retriable failure (unreachable, timed
    out, overloaded) is retried ``retries`` times with exponential backoff from ``backoff_ms``; after
    ``breaker_failures`` failed calls in a row the circuit opens for ``breaker_open_s`` (calls fail at once).
    """

    model_config = ConfigDict(frozen=True)

    url: str
    protocol: Literal["v2", "tfserving"] = "v2"
    model: str
    version: str = ""
    timeout_ms: int = Field(default=2000, gt=0)
    retries: int = Field(default=3, ge=0)
    backoff_ms: int = Field(default=50, ge=0)
    breaker_failures: int = Field(default=5, ge=1)
    breaker_open_s: float = Field(default=5.0, gt=0)

    @property
    def transport(self) -> Literal["grpc", "http"]:
        return "grpc" if self.url.startswith("grpc://") else "http"

    @property
    def describe(self) -> str:
        version = f"/versions/{self.version}" if self.version else ""
        return f"{self.protocol} {self.url} model {self.model}{version}"


class ModelCard(BaseModel):
    """Metadata of one model version; JSON-serialisable with :meth:`to_json` / :meth:`from_json`."""

    model_config = ConfigDict(frozen=True)

    name: str
    version: int | None = None
    created: datetime = Field(default_factory=lambda: datetime.now(UTC))
    description: str | None = None
    framework: str = "onnx"
    framework_version: str | None = None
    recipe: str | None = None
    params: dict[str, Any] = {}
    features: list[str] = []
    label: str | None = None
    signature: Signature | None = None
    lineage: Lineage = Lineage()
    metrics: dict[str, Any] = {}
    threshold: float | None = None
    threshold_rule: str | None = None
    output: OutputSpec = OutputSpec(kind="raw", fields=[])
    reference: ReferenceStats | None = None
    parity: Parity | None = None
    plots: list[str] = []
    tags: dict[str, str] = {}
    #: set for a version scored by a model server instead of a local ONNX artifact
    remote: RemoteEndpoint | None = None

    def to_json(self, indent: int | None = 2) -> str:
        return self.model_dump_json(indent=indent)

    @classmethod
    def from_json(cls, data: str | bytes) -> ModelCard:
        """Parse a card; :class:`ModelError` when it is not a valid card."""
        try:
            return cls.model_validate_json(data)
        except ValidationError as exc:
            raise ModelError(f"invalid model card: {exc.errors()[0]['msg']} at {exc.errors()[0]['loc']}") from exc
        except json.JSONDecodeError as exc:  # pragma: no cover - pydantic wraps these
            raise ModelError(f"invalid model card JSON: {exc}") from exc

    @property
    def sql_type(self) -> str:
        """The SQL type ``PREDICT`` returns for this model."""
        return self.output.sql_type

    def postprocess(self, raw: dict[str, np.ndarray]) -> pa.StructArray:
        """Raw ONNX outputs of one batch -> the StructArray ``PREDICT`` returns (uses :attr:`threshold`)."""
        return self.output.postprocess(raw, self.threshold)

    def with_updates(self, **changes: Any) -> ModelCard:
        """A validated copy with ``changes`` applied."""
        return ModelCard.model_validate({**self.model_dump(), **changes})
