"""Bring your own model: a file trained elsewhere, converted to ONNX with the converter made for its framework,
checked against the framework's own output, and registered with a card.

By path:

- ``.onnx``: validated and run (:func:`~streamml.models.export.import_onnx`);
- ``.pkl``, ``.pickle``, ``.joblib``: a scikit-learn estimator or pipeline, unpickled only with ``trust``;
- ``.pt``, ``.pth``: a TorchScript module (``torch.jit.save``); ``.pt2``: an exported program
  (``torch.export.save``); both exported again with ``torch.onnx``;
- ``.keras``, ``.h5``: a Keras 3 model, loaded on the PyTorch backend and exported with ``torch.onnx``
  (TensorFlow stays out of it);
- ``.json``/``.ubj`` (XGBoost) and ``.txt`` (LightGBM) boosters: converted with onnxmltools
  (:mod:`streamml.models.boosters`, extra ``streamml[gbm]``);
- a folder holding ``saved_model.pb`` (TensorFlow SavedModel): refused naming the converter it needs
  (tf2onnx, which needs TensorFlow).

The sample (CSV, Parquet or JSON lines, one column per feature) names the features in the model's order, is
the parity check's input (ONNX Runtime within 1e-4 of the framework) and the data of the reference
statistics a monitor compares live traffic with. Formats that do not carry their input width need one.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from streamml.errors import InputError, ModelError
from streamml.models.card import ModelCard, OutputSpec
from streamml.models.export import Exported, export_torch, import_onnx, import_sklearn
from streamml.models.registry import ModelVersion, Registry
from streamml.models.runtime import OnnxModel
from streamml.models.stats import reference_stats

PICKLES = (".pkl", ".pickle", ".joblib")
TORCH = (".pt", ".pth", ".pt2")
KERAS = (".keras", ".h5")
BOOSTERS = (".json", ".ubj", ".txt")
#: an imported autoencoder's reconstruction error
SCORE = "score"


def read_sample(path: str | os.PathLike[str]) -> pa.Table:
    """A sample table from CSV (with a header), Parquet or JSON lines."""
    path = Path(path)
    suffix = path.suffix.lower()
    try:
        if suffix == ".parquet":
            import pyarrow.parquet as pq

            return pq.read_table(path)
        if suffix in (".jsonl", ".json", ".ndjson"):
            import pyarrow.json as pajson

            return pajson.read_json(path)
        import pyarrow.csv as pacsv

        return pacsv.read_csv(path)
    except (OSError, pa.ArrowInvalid) as exc:
        raise InputError(
            f"cannot read the sample '{path}': {exc}", hint="CSV with a header, Parquet or JSON lines"
        ) from None


def sample_matrix(sample: pa.Table) -> np.ndarray:
    """The sample's columns as a float32 matrix (every column must be numeric)."""
    bad = [f.name for f in sample.schema if not (pa.types.is_integer(f.type) or pa.types.is_floating(f.type))]
    if bad:
        raise InputError(f"sample column(s) {', '.join(bad)} are not numeric", hint="keep only the feature columns")
    return np.column_stack([sample.column(c).to_numpy(zero_copy_only=False) for c in sample.column_names]).astype(
        np.float32
    )


def convert(path: str | os.PathLike[str], sample: np.ndarray | None, *, trust: bool = False) -> Exported:
    """The ONNX artifact of the model at ``path`` with its parity check (see the module docstring)."""
    path = Path(path)
    suffix = path.suffix.lower()
    if path.is_dir():
        if (path / "saved_model.pb").exists():
            hint = "pip install tensorflow-cpu tf2onnx, or convert it with tf2onnx and import the .onnx"
            raise ModelError(
                f"'{path}' is a TensorFlow SavedModel: converting it needs tensorflow and tf2onnx", hint=hint
            )
        raise InputError(f"'{path}' is a folder without a saved_model.pb", hint="give the model file")
    if not path.exists():
        raise InputError(f"no such file: '{path}'")
    if suffix == ".onnx":
        return import_onnx(path)
    if suffix in PICKLES:
        return import_sklearn(path, trust=trust, sample=sample)
    if suffix in TORCH:
        return export_torch(_load_torch(path), _needed(sample, path))
    if suffix in KERAS:
        return export_torch(_keras_module(_load_keras(path)), _needed(sample, path))
    if suffix in BOOSTERS:
        from streamml.models.boosters import export_booster

        return export_booster(path, _needed(sample, path))
    raise InputError(f"cannot tell the framework of '{path}' from its name",
                     hint="use .onnx, .pkl/.joblib, .pt/.pt2, .keras/.h5, .json/.ubj or .txt (boosters)")  # fmt: skip


def import_model(
    registry: Registry,
    path: str | os.PathLike[str],
    *,
    name: str,
    sample: pa.Table | None = None,
    trust: bool = False,
    description: str | None = None,
    autoencoder: bool = False,
    threshold: float | None = None,
    threshold_quantile: float = 0.99,
) -> ModelVersion:
    """Convert, check and register the model at ``path`` as a new version of ``name``.

    ``autoencoder``: the model reconstructs its input; its graph gets the mean squared reconstruction error
    per row as output ``score`` and ``PREDICT`` returns ``STRUCT<score, is_anomaly>``, anomalous from
    ``threshold``, or else from the ``threshold_quantile`` of the sample's scores."""
    x = sample_matrix(sample) if sample is not None else None
    exported = convert(path, x, trust=trust)
    onnx_bytes = reconstruction_error_graph(exported.onnx_bytes) if autoencoder else exported.onnx_bytes
    model = OnnxModel(onnx_bytes, source=os.fspath(path))
    features: list[str] = []
    reference = None
    scores = None
    if sample is not None and x is not None:
        width = _width(model)
        if width is not None and width != x.shape[1]:
            raise InputError(f"the sample has {x.shape[1]} columns, the model reads {width} features",
                             hint="keep exactly the feature columns, in the model's order")  # fmt: skip
        features = list(sample.column_names)
        outputs = model.predict(x)
        scores = outputs.get(SCORE) if autoencoder else None
        reference = reference_stats(x, features, _scalar_outputs(outputs, len(x)))
    extra: dict[str, Any] = {}
    if autoencoder:
        extra["output"] = OutputSpec.anomaly(SCORE)
        if threshold is not None:
            extra.update(threshold=float(threshold), threshold_rule="given")
        elif scores is not None:
            extra["threshold"] = float(np.quantile(np.asarray(scores, np.float64), threshold_quantile))
            extra["threshold_rule"] = f"{threshold_quantile:g} quantile of the sample's reconstruction error"
    card = ModelCard(name=name, framework=exported.framework, framework_version=exported.framework_version,
                     features=features, parity=exported.parity, reference=reference,
                     description=description or f"imported from {Path(path).name}", **extra)  # fmt: skip
    return registry.register(name, onnx_bytes, card)


def reconstruction_error_graph(onnx_bytes: bytes) -> bytes:
    """An autoencoder's graph (one input, its reconstruction as the first output) with the per-row mean
    squared reconstruction error added as output ``score``."""
    import onnx
    from onnx import helper

    model = onnx.load_from_string(onnx_bytes)
    graph = model.graph
    constants = {init.name for init in graph.initializer}
    inputs = [i for i in graph.input if i.name not in constants]
    if len(inputs) != 1 or not graph.output:
        found = f"this model reads {len(inputs)} inputs and returns {len(graph.output)} outputs"
        raise ModelError("an autoencoder reads one input and returns its reconstruction", hint=found)
    x, reconstruction = inputs[0], graph.output[0]
    x_shape, out_shape = (_dims(v) for v in (x, reconstruction))
    if len(x_shape) != 2 or x_shape[1:] != out_shape[1:] or x.type.tensor_type.elem_type != _elem(reconstruction):
        raise ModelError("not an autoencoder: its first output does not have its input's shape and type",
                         hint=f"input {x_shape}, output {reconstruction.name} {out_shape}")  # fmt: skip
    opset = max((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), default=0)
    names = [f"streamml_reconstruction_{part}" for part in ("diff", "squared", "axes")]
    graph.node.extend([helper.make_node("Sub", [x.name, reconstruction.name], [names[0]]),
                       helper.make_node("Mul", [names[0], names[0]], [names[1]])])  # fmt: skip
    if opset >= 18:  # from opset 18 the axes are an input
        graph.initializer.append(helper.make_tensor(names[2], onnx.TensorProto.INT64, [1], [1]))
        graph.node.append(helper.make_node("ReduceMean", [names[1], names[2]], [SCORE], keepdims=0))
    else:
        graph.node.append(helper.make_node("ReduceMean", [names[1]], [SCORE], axes=[1], keepdims=0))
    graph.output.append(helper.make_tensor_value_info(SCORE, _elem(reconstruction), [x_shape[0]]))
    onnx.checker.check_model(model)
    return model.SerializeToString()


def _dims(value: Any) -> list[int | str]:
    return [d.dim_value if d.HasField("dim_value") else d.dim_param for d in value.type.tensor_type.shape.dim]


def _elem(value: Any) -> int:
    return int(value.type.tensor_type.elem_type)


def _scalar_outputs(outputs: dict[str, np.ndarray], rows: int) -> dict[str, np.ndarray]:
    """The outputs with one number per row (a score, a probability), for the reference statistics."""
    found = {}
    for name, value in outputs.items():
        array = np.asarray(value)
        if array.dtype.kind in "fb" and array.size == rows:
            found[name] = array.reshape(rows).astype(np.float64)
    return found


def _width(model: OnnxModel) -> int | None:
    inputs = model.signature.inputs
    if len(inputs) == 1 and inputs[0].shape and len(inputs[0].shape) == 2 and isinstance(inputs[0].shape[1], int):
        return int(inputs[0].shape[1])
    return None


def _needed(sample: np.ndarray | None, path: Path) -> np.ndarray:
    if sample is None:
        raise InputError(f"'{path.name}' does not say what its input looks like", hint="pass a sample (--sample FILE)")
    return sample


def _load_torch(path: Path) -> Any:
    from streamml.models.export import _torch

    torch = _torch()
    try:
        if path.suffix.lower() == ".pt2":
            return torch.export.load(str(path)).module()
        return torch.jit.load(str(path), map_location="cpu")
    except Exception as exc:
        raise ModelError(f"cannot load the PyTorch model '{path}': {str(exc).strip().splitlines()[0]}") from exc


@contextlib.contextmanager
def keras_without_tensorflow() -> Iterator[None]:
    """Keras picks TensorFlow up when ``import tensorflow`` works, and here it finds only the protobuf messages
    of TF Serving under that name: hide them while Keras loads, so it runs on PyTorch alone."""
    saved = {k: v for k, v in sys.modules.items() if k == "tensorflow" or k.startswith("tensorflow.")}
    sys.modules["tensorflow"] = None  # type: ignore[assignment]
    try:
        yield
    finally:
        del sys.modules["tensorflow"]
        sys.modules.update(saved)


def _load_keras(path: Path) -> Any:
    os.environ.setdefault("KERAS_BACKEND", "torch")
    try:
        with keras_without_tensorflow():
            import keras

            if keras.backend.backend() != "torch":
                raise ModelError(f"Keras runs on {keras.backend.backend()} here; importing needs its PyTorch backend",
                                 hint="set KERAS_BACKEND=torch")  # fmt: skip
            return keras.models.load_model(str(path), compile=False)
    except ImportError as exc:
        raise ModelError(
            "importing a Keras model needs keras 3 and PyTorch", hint="pip install 'streamml[keras]'"
        ) from exc
    except (OSError, ValueError) as exc:
        raise ModelError(f"cannot load the Keras model '{path}': {str(exc).strip().splitlines()[0]}") from exc


def _keras_module(model: Any) -> Any:
    """A Keras model on PyTorch as a module called with one tensor, as ``torch.onnx`` traces it (the model
    itself takes its inputs as a structure the exporter's dynamic shapes do not match)."""
    from streamml.models.export import _torch

    torch = _torch()

    class KerasCall(torch.nn.Module):  # type: ignore[name-defined]
        def __init__(self) -> None:
            super().__init__()
            self.model = model

        def forward(self, x: Any) -> Any:
            return self.model(x, training=False)

    # an activity regularizer only adds a training loss, but tracing it pins the batch size: drop it
    for layer in model._flatten_layers(include_self=True, recursive=True):
        if getattr(layer, "activity_regularizer", None) is not None:
            layer.activity_regularizer = None
    return KerasCall()
