"""TensorFlow Serving's API independent of transport: model status, metadata, predict, classify and regress.

The REST and gRPC front ends decode their wire form into NumPy feeds or :data:`Examples` and call these.
Metadata describes every model as TF Serving describes a SavedModel: a ``serving_default`` signature (the
predict method over the model's own inputs and outputs) and, for a classifier or regression model (as its
card says), a ``classification`` or ``regression`` signature over ``tf.Example`` inputs. Classify and
regress read examples (feature name -> values): when the model takes one input per feature they feed those
inputs by name; when it takes one ``[N, F]`` input they stack the card's features in the card's order. A
classifier answers every class of its card with its probability; a regression model one value per example.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from streamml.errors import ModelError
from streamml.inference.service import Served
from streamml.inference.tensors import InvalidTensor
from streamml.inference.tfserving_protos import meta_graph_pb2, types_pb2
from streamml.models.registry import ModelRef
from streamml.models.signature import TensorSpec
from streamml.serve.dataplane import DataPlane, Feed

DEFAULT_SIGNATURE = "serving_default"
CLASSIFY_SIGNATURE = "classification"
REGRESS_SIGNATURE = "regression"
PREDICT_METHOD = "tensorflow/serving/predict"
CLASSIFY_METHOD = "tensorflow/serving/classify"
REGRESS_METHOD = "tensorflow/serving/regress"
#: GetModelMetadata's one metadata field
SIGNATURE_DEF = "signature_def"

#: signature dtype name -> TensorFlow DataType
DTYPES: dict[str, int] = {
    "float32": types_pb2.DT_FLOAT,
    "float64": types_pb2.DT_DOUBLE,
    "float16": types_pb2.DT_HALF,
    "int8": types_pb2.DT_INT8,
    "int16": types_pb2.DT_INT16,
    "int32": types_pb2.DT_INT32,
    "int64": types_pb2.DT_INT64,
    "uint8": types_pb2.DT_UINT8,
    "uint16": types_pb2.DT_UINT16,
    "uint32": types_pb2.DT_UINT32,
    "uint64": types_pb2.DT_UINT64,
    "bool": types_pb2.DT_BOOL,
    "string": types_pb2.DT_STRING,
}

#: one example: feature name -> its values (floats, integers, or bytes / text)
Example = Mapping[str, Sequence[float | int | bytes | str]]
Examples = Sequence[Example]


@dataclass(frozen=True)
class Target:
    """The model a request names: a name and at most one of a version and a label (an alias)."""

    name: str
    version: str | None = None
    label: str | None = None

    def resolve(self, plane: DataPlane) -> Served:
        if self.version and self.label:
            raise InvalidTensor("a request names either a version or a version label, not both")
        return plane.resolve(self.name, self.version, alias=self.label)


# -- status and metadata --------------------------------------------------------------------------------
def model_status(plane: DataPlane, target: Target) -> list[int]:
    """The versions that answer for ``target``, newest first: the one asked for, or every version in force."""
    served = target.resolve(plane)
    if target.version or target.label:
        return [served.version.version]
    name = served.version.name
    versions = {served.version.version}
    versions |= {s.version.version for ref, s in plane.service.serving().items() if ModelRef.parse(ref).name == name}
    return sorted(versions, reverse=True)


def tensor_info(name: str, dtype: int, shape: Sequence[Any] | None) -> meta_graph_pb2.TensorInfo:
    info = meta_graph_pb2.TensorInfo(name=name, dtype=dtype)
    if shape is None:
        info.tensor_shape.unknown_rank = True
    for dim in shape or []:
        info.tensor_shape.dim.add(size=dim if isinstance(dim, int) and dim >= 0 else -1)
    return info


def _spec_info(spec: TensorSpec) -> meta_graph_pb2.TensorInfo:
    return tensor_info(spec.name, DTYPES.get(spec.dtype, types_pb2.DT_INVALID), spec.shape)


def signature_defs(served: Served) -> dict[str, meta_graph_pb2.SignatureDef]:
    """The model's signatures as TF Serving lists them in metadata."""
    signature = served.model.signature
    defs = {
        DEFAULT_SIGNATURE: meta_graph_pb2.SignatureDef(
            inputs={s.name: _spec_info(s) for s in signature.inputs},
            outputs={s.name: _spec_info(s) for s in signature.outputs},
            method_name=PREDICT_METHOD,
        )
    }
    output = served.version.card.output
    examples = {"inputs": tensor_info("tf_example", types_pb2.DT_STRING, [-1])}
    if output.kind == "classifier":
        width = len(output.classes) if output.classes else -1
        defs[CLASSIFY_SIGNATURE] = meta_graph_pb2.SignatureDef(
            inputs=examples,
            outputs={
                "classes": tensor_info("classes", types_pb2.DT_STRING, [-1, width]),
                "scores": tensor_info("scores", types_pb2.DT_FLOAT, [-1, width]),
            },
            method_name=CLASSIFY_METHOD,
        )
    elif output.kind == "regression":
        defs[REGRESS_SIGNATURE] = meta_graph_pb2.SignatureDef(
            inputs=examples,
            outputs={"outputs": tensor_info("outputs", types_pb2.DT_FLOAT, [-1, 1])},
            method_name=REGRESS_METHOD,
        )
    return defs


def check_signature(served: Served, name: str, method: str) -> str:
    """The signature a request runs (``name``, or the default), refused when the model has no such one."""
    defs = signature_defs(served)
    chosen = name or DEFAULT_SIGNATURE
    if chosen not in defs:
        raise InvalidTensor(
            f"{served.label} has no signature '{chosen}'", hint=f"its signatures: {', '.join(sorted(defs))}"
        )
    if chosen != DEFAULT_SIGNATURE and defs[chosen].method_name != method:
        raise InvalidTensor(f"signature '{chosen}' of {served.label} is for {defs[chosen].method_name}, not {method}")
    return chosen


# -- predict --------------------------------------------------------------------------------------------
async def predict(plane: DataPlane, served: Served, feed: Feed, outputs: Sequence[str] = ()) -> dict[str, np.ndarray]:
    """The model's outputs for ``feed`` (only those named in ``outputs`` when given), in signature order."""
    known = [spec.name for spec in served.model.signature.outputs]
    unknown = [name for name in outputs if name not in known]
    if unknown:
        raise InvalidTensor(f"{served.label} has no output {unknown}", hint=f"its outputs: {', '.join(known)}")
    raw = await plane.infer(served, feed)
    return {name: np.asarray(raw[name]) for name in known if not outputs or name in outputs}


# -- classify and regress -------------------------------------------------------------------------------
async def classify(plane: DataPlane, served: Served, examples: Examples) -> list[list[tuple[str, float]]]:
    """Per example, every class of the model's card with its probability, in the card's class order."""
    output = served.version.card.output
    if output.kind != "classifier":
        raise InvalidTensor(
            f"{served.label} is not a classifier (its card says '{output.kind}')", hint=_use(output.kind)
        )
    raw = await plane.infer(served, examples_feed(plane, served, examples))
    name = output.score_output or "probabilities"
    if name not in raw:
        raise ModelError(f"{served.label} returned no '{name}' output; it returned {sorted(raw)}")
    probs = np.asarray(raw[name], dtype=np.float64)
    if probs.ndim == 1 or (probs.ndim == 2 and probs.shape[1] == 1):  # P(positive) only
        positive = probs.reshape(-1)
        probs = np.column_stack([1.0 - positive, positive])
    classes = output.classes or [str(i) for i in range(probs.shape[-1])]
    if probs.ndim != 2 or probs.shape[1] != len(classes):
        raise ModelError(f"{served.label} returned probabilities {list(probs.shape)} for {len(classes)} classes")
    return [list(zip(classes, row.tolist(), strict=True)) for row in probs]


async def regress(plane: DataPlane, served: Served, examples: Examples) -> list[float]:
    """One value per example from a regression model."""
    output = served.version.card.output
    if output.kind != "regression":
        raise InvalidTensor(
            f"{served.label} is not a regression model (its card says '{output.kind}')", hint=_use(output.kind)
        )
    raw = await plane.infer(served, examples_feed(plane, served, examples))
    name = output.score_output if output.score_output in raw else next(iter(raw))
    values = np.asarray(raw[name], dtype=np.float64)
    values = values.reshape(len(values), -1) if values.ndim else values.reshape(1, 1)
    if values.shape[1] != 1:
        raise ModelError(f"{served.label} returned {values.shape[1]} values per example from '{name}', not one")
    return values[:, 0].tolist()


def _use(kind: str) -> str:
    return {"classifier": "use :classify", "regression": "use :regress"}.get(kind, "use :predict")


def examples_feed(plane: DataPlane, served: Served, examples: Examples) -> Feed:
    """The model's inputs from ``examples``: one input per feature by name, or the card's features stacked."""
    if not examples:
        raise InvalidTensor("the request has no examples")
    if len(examples) > plane.limits.max_batch_rows:
        raise InvalidTensor(f"{len(examples)} examples, more than the limit of {plane.limits.max_batch_rows}")
    specs = served.model.signature.inputs
    features = list(served.version.card.features)
    by_name = all(spec.name in examples[0] for spec in specs)
    if by_name:
        return {spec.name: _column(served, spec, examples) for spec in specs}
    if len(specs) == 1 and features and (specs[0].shape is None or len(specs[0].shape) == 2):
        return {specs[0].name: _stacked(served, features, examples)}
    wanted = features if len(specs) == 1 and features else [spec.name for spec in specs]
    missing = [name for name in wanted if name not in examples[0]]
    raise InvalidTensor(
        f"example 0 lacks features {missing} that {served.label} reads", hint=f"its features: {', '.join(wanted)}"
    )


def _values(served: Served, examples: Examples, index: int, feature: str) -> Sequence[Any]:
    values = examples[index].get(feature)
    if values is None or len(values) == 0:
        raise InvalidTensor(f"example {index} has no value for feature '{feature}' that {served.label} reads")
    return values


def _column(served: Served, spec: TensorSpec, examples: Examples) -> np.ndarray:
    """One input from the feature of the same name: a row of values per example, shaped like the input."""
    rows = [_values(served, examples, i, spec.name) for i in range(len(examples))]
    width = len(rows[0])
    for i, row in enumerate(rows):
        if len(row) != width:
            raise InvalidTensor(f"feature '{spec.name}' has {width} values in example 0 but {len(row)} in example {i}")
    text = [isinstance(v, bytes | str) for row in rows for v in row]
    if any(text) and not all(text):
        raise InvalidTensor(f"feature '{spec.name}' mixes text and numbers")
    if all(text):
        array = np.empty((len(rows), width), dtype=object)
        array[:] = [[v.encode() if isinstance(v, str) else v for v in row] for row in rows]
    else:
        array = np.asarray(rows, dtype=np.float64 if any(isinstance(v, float) for r in rows for v in r) else np.int64)
    shape = spec.shape
    if shape is not None and len(shape) == 1:
        if width != 1:
            raise InvalidTensor(f"input '{spec.name}' of {served.label} takes one value per example, got {width}")
        return array.reshape(-1)
    if shape is not None and len(shape) > 2 and all(isinstance(d, int) and d > 0 for d in shape[1:]):
        dims = [int(d) for d in shape[1:] if isinstance(d, int)]
        if int(np.prod(dims)) == width:
            return array.reshape(len(rows), *dims)
    return array


def _stacked(served: Served, features: list[str], examples: Examples) -> np.ndarray:
    """The card's features, one number each, side by side in the card's order: an ``[N, F]`` matrix."""
    matrix = np.empty((len(examples), len(features)), dtype=np.float64)
    for i in range(len(examples)):
        for j, feature in enumerate(features):
            values = _values(served, examples, i, feature)
            if len(values) != 1 or isinstance(values[0], bytes | str):
                raise InvalidTensor(
                    f"feature '{feature}' of example {i} must be one number for {served.label}, not {values!r:.50}"
                )
            matrix[i, j] = values[0]
    return matrix
