"""Flavours: turn a trained model of some framework into a checked ONNX artifact.

Every exporter returns an :class:`Exported` (bytes + :class:`Parity`) and raises :class:`ModelError` when
the ONNX Runtime output drifts from the framework's own output by more than the tolerance on held-out rows.

- scikit-learn -> :func:`export_sklearn` (skl2onnx); a pickled estimator only with ``trust=True``.
- an existing ``.onnx`` file -> :func:`import_onnx` (``onnx.checker`` + an inference on zeros).
- PyTorch -> :func:`export_torch`; Keras -> :func:`export_keras` (optional frameworks, imported lazily).
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import tempfile
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import onnx

from streamml.errors import ModelError
from streamml.models.card import Parity
from streamml.models.runtime import OnnxModel, read_artifact

logger = logging.getLogger(__name__)

PARITY_TOLERANCE = 1e-4
#: Opsets every exporter here targets (ONNX Runtime 1.31 runs them; skl2onnx 1.20 is tested up to 22).
TARGET_OPSET = {"": 17, "ai.onnx.ml": 3}


@dataclass(frozen=True)
class Exported:
    """An ONNX artifact, its parity check and the framework that produced it."""

    onnx_bytes: bytes
    parity: Parity
    framework: str
    framework_version: str | None = None


def max_abs_diff(expected: np.ndarray, actual: np.ndarray) -> float:
    """Largest absolute difference between two arrays of the same number of elements (inf if shapes differ)."""
    expected = np.asarray(expected, dtype=np.float64)
    actual = np.asarray(actual, dtype=np.float64)
    if expected.size != actual.size:
        return float("inf")
    if expected.size == 0:
        return 0.0
    diff = np.abs(expected.reshape(-1) - actual.reshape(-1))
    return float(np.nanmax(diff)) if not np.isnan(diff).all() else float("inf")


def check_parity(
    expected: np.ndarray,
    actual: np.ndarray,
    *,
    output: str,
    tolerance: float = PARITY_TOLERANCE,
    what: str = "model",
) -> Parity:
    """Compare framework and ONNX outputs; :class:`ModelError` when they differ by more than ``tolerance``."""
    parity = Parity(max_abs_diff=max_abs_diff(expected, actual), tolerance=tolerance, rows=len(expected), output=output)
    if not parity.passed:
        raise ModelError(
            f"ONNX export of {what} failed the parity check: output '{output}' differs by "
            f"{parity.max_abs_diff:.3g} (> {tolerance:g}) on {parity.rows} held-out rows"
        )
    logger.debug("parity of %s on '%s': %.3g over %d rows", what, output, parity.max_abs_diff, parity.rows)
    return parity


def _is_classifier(estimator: Any) -> bool:
    return hasattr(estimator, "predict_proba") and hasattr(estimator, "classes_")


def export_sklearn(
    estimator: Any,
    sample: np.ndarray,
    *,
    input_name: str = "X",
    tolerance: float = PARITY_TOLERANCE,
    target_opset: dict[str, int] | None = None,
) -> Exported:
    """Convert a fitted scikit-learn estimator or pipeline with skl2onnx and check parity on ``sample``.

    Classifiers export without ZipMap: outputs ``label`` and ``probabilities`` (parity on probabilities);
    regressors and transformers output ``variable``.
    """
    import sklearn
    from skl2onnx import convert_sklearn
    from skl2onnx.common.data_types import FloatTensorType

    sample = np.asarray(sample, dtype=np.float32)
    if sample.ndim != 2 or len(sample) == 0:
        raise ModelError("export needs a non-empty 2-D sample of held-out rows for the parity check")
    classifier = _is_classifier(estimator)
    options = {id(_final_step(estimator)): {"zipmap": False}} if classifier else None
    try:
        proto = convert_sklearn(
            estimator,
            initial_types=[(input_name, FloatTensorType([None, sample.shape[1]]))],
            options=options,
            target_opset=target_opset or TARGET_OPSET,
            custom_conversion_functions=_tree_converters(),
        )
    except Exception as exc:
        raise ModelError(f"skl2onnx cannot convert {type(estimator).__name__}: {_first_line(exc)}") from exc
    onnx_bytes = proto.SerializeToString()
    outputs = OnnxModel(onnx_bytes, source=type(estimator).__name__).predict(sample)
    if classifier:
        name = "probabilities"
        expected = estimator.predict_proba(sample)
    elif hasattr(estimator, "predict"):
        name = "variable"
        expected = estimator.predict(sample)
    else:
        name = "variable"
        expected = estimator.transform(sample)
    if name not in outputs:
        name = list(outputs)[-1]
    parity = check_parity(expected, outputs[name], output=name, tolerance=tolerance, what=type(estimator).__name__)
    return Exported(onnx_bytes, parity, "scikit-learn", sklearn.__version__)


def _first_line(exc: BaseException, limit: int = 300) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return text if len(text) <= limit else text[:limit] + "..."


class _IntegerAttributes:
    """Container proxy that turns boolean entries of list attributes into ints.

    skl2onnx's histogram-gradient-boosting converter mixes Python bools into the integer attribute
    ``nodes_missing_value_tracks_true``, which current protobuf rejects.
    """

    def __init__(self, container: Any) -> None:
        self._container = container

    def __getattr__(self, name: str) -> Any:
        return getattr(self._container, name)

    def add_node(self, *args: Any, **attrs: Any) -> Any:
        for key, value in attrs.items():
            if isinstance(value, list) and any(isinstance(v, bool | np.bool_) for v in value):
                attrs[key] = [int(v) if isinstance(v, bool | np.bool_) else v for v in value]
        return self._container.add_node(*args, **attrs)


def _tree_converters() -> dict[Any, Any]:
    """Per-call converter overrides (no global registration) for histogram gradient boosting."""
    from skl2onnx.common._registration import get_converter
    from sklearn.ensemble import HistGradientBoostingClassifier, HistGradientBoostingRegressor

    overrides: dict[Any, Any] = {}
    for model_type, alias in (
        (HistGradientBoostingClassifier, "SklearnHistGradientBoostingClassifier"),
        (HistGradientBoostingRegressor, "SklearnHistGradientBoostingRegressor"),
    ):
        original = get_converter(alias)

        def convert(scope: Any, operator: Any, container: Any, _original: Any = original) -> Any:
            return _original(scope, operator, _IntegerAttributes(container))

        overrides[model_type] = convert
    return overrides


def _final_step(estimator: Any) -> Any:
    steps = getattr(estimator, "steps", None)
    return steps[-1][1] if steps else estimator


def import_onnx(source: str | os.PathLike[str] | bytes) -> Exported:
    """Validate an existing ONNX artifact (``onnx.checker`` + an inference on zeros).

    The parity of an imported file cannot be measured (there is no framework to compare with); it is
    recorded as a self-consistency check (two runs on zeros agree).
    """
    data, label = read_artifact(source)
    try:
        proto = onnx.load_model_from_string(data)
        onnx.checker.check_model(proto)
    except Exception as exc:
        raise ModelError(f"'{label}' is not a valid ONNX model: {str(exc).strip().splitlines()[0]}") from exc
    model = OnnxModel(data, source=label)
    feed = model.zeros(2)
    first, second = model.predict(feed), model.predict(feed)
    name = model.output_names[0]
    diff = max_abs_diff(_numeric(first[name]), _numeric(second[name]))
    version = proto.producer_version or None
    return Exported(data, Parity(max_abs_diff=diff, rows=2, output=name), proto.producer_name or "onnx", version)


def _numeric(array: np.ndarray) -> np.ndarray:
    array = np.asarray(array)
    return array if array.dtype.kind in "fiub" else np.zeros(array.shape)


def import_sklearn(
    source: str | os.PathLike[str] | bytes,
    *,
    trust: bool = False,
    sample: np.ndarray | None = None,
    seed: int = 0,
) -> Exported:
    """Export a pickled (joblib) scikit-learn model; unpickling runs code, so ``trust=True`` is required.

    Without ``sample`` the parity check uses seeded standard-normal rows of the estimator's width.
    """
    data, label = read_artifact(source)
    if not trust:
        raise ModelError(
            f"refusing to unpickle '{label}': loading a pickle can run arbitrary code",
            hint="pass trust=True (CLI: --trust) only for files you produced yourself",
        )
    import joblib

    try:
        estimator = joblib.load(io.BytesIO(data))
    except Exception as exc:
        raise ModelError(f"cannot unpickle scikit-learn model '{label}': {exc}") from exc
    if sample is None:
        width = getattr(estimator, "n_features_in_", None)
        if width is None:
            raise ModelError(f"'{label}' does not say how many features it reads; pass a sample")
        sample = np.random.default_rng(seed).standard_normal((64, int(width))).astype(np.float32)
    return export_sklearn(estimator, sample)


def _torch() -> Any:
    try:
        import torch
    except ImportError as exc:
        raise ModelError("this needs PyTorch, which is not installed", hint="pip install 'streamml[torch]'") from exc
    return torch


@contextlib.contextmanager
def _quiet_exporter() -> Iterator[None]:
    """Keep the exporter's notes to itself (deprecations, skipped optional operators): they are about torch's
    internals, not the user's model; a failed export still raises."""
    logger = logging.getLogger("torch.onnx")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        logger.setLevel(level)


def export_torch(
    module: Any,
    sample: np.ndarray,
    *,
    input_name: str = "X",
    output_names: list[str] | None = None,
    tolerance: float = PARITY_TOLERANCE,
    opset: int = 18,
) -> Exported:
    """Export a ``torch.nn.Module`` with ``torch.onnx.export`` (dynamic batch) and check parity on ``sample``.

    The model is written to a temporary file, which both the TorchScript and the dynamo exporters accept.
    """
    torch = _torch()
    output_names = output_names or ["output"]
    sample = np.asarray(sample, dtype=np.float32)
    with contextlib.suppress(NotImplementedError):  # the module of an exported program is in eval mode already
        module.eval()
    tensor = torch.from_numpy(sample)
    dynamic = {input_name: {0: "batch"}, **{name: {0: "batch"} for name in output_names}}
    with tempfile.TemporaryDirectory(prefix="streamml-torch-") as folder:
        target = os.path.join(folder, "model.onnx")
        try:
            with _quiet_exporter():
                torch.onnx.export(
                    module,
                    (tensor,),
                    target,
                    input_names=[input_name],
                    output_names=output_names,
                    dynamic_axes=dynamic,
                    opset_version=opset,
                    verbose=False,  # the exporter otherwise reports its progress on stdout
                    # a TorchScript module is already a graph: the TorchScript exporter takes it as it is
                    **({"dynamo": False} if isinstance(module, torch.jit.ScriptModule) else {}),
                )
            proto = onnx.load(target)  # folds external data, if any, back into the model
        except Exception as exc:
            raise ModelError(f"torch.onnx.export failed for {type(module).__name__}: {_first_line(exc)}") from exc
    onnx_bytes = proto.SerializeToString()
    with torch.no_grad():  # not inference mode: a TorchScript module may still record for autograd
        expected = module(tensor)
    expected = expected[0] if isinstance(expected, tuple | list) else expected
    actual = OnnxModel(onnx_bytes, source=type(module).__name__).predict(sample)[output_names[0]]
    parity = check_parity(
        expected.detach().cpu().numpy(), actual, output=output_names[0], tolerance=tolerance, what="torch module"
    )
    return Exported(onnx_bytes, parity, "torch", str(torch.__version__))


def export_keras(model: Any, sample: np.ndarray, *, tolerance: float = PARITY_TOLERANCE, opset: int = 17) -> Exported:
    """Convert a Keras model (TensorFlow backend) with tf2onnx; needs ``tensorflow`` and ``tf2onnx``."""
    try:
        import tensorflow as tf
        import tf2onnx
    except ImportError as exc:
        raise ModelError(
            "Keras export needs tensorflow and tf2onnx, which are not installed",
            hint="pip install tensorflow-cpu tf2onnx",
        ) from exc
    sample = np.asarray(sample, dtype=np.float32)
    if isinstance(model, str | os.PathLike):
        model = tf.keras.models.load_model(os.fspath(model))
    spec = (tf.TensorSpec((None, *sample.shape[1:]), tf.float32, name="X"),)
    try:
        proto, _ = tf2onnx.convert.from_keras(model, input_signature=spec, opset=opset)
    except Exception as exc:
        raise ModelError(f"tf2onnx cannot convert the Keras model: {_first_line(exc)}") from exc
    onnx_bytes = proto.SerializeToString()
    runtime = OnnxModel(onnx_bytes, source="keras model")
    name = runtime.output_names[0]
    actual = runtime.predict(sample)[name]
    expected = np.asarray(model(sample, training=False))
    parity = check_parity(expected, actual, output=name, tolerance=tolerance, what="Keras model")
    return Exported(onnx_bytes, parity, "keras", str(tf.__version__))


def parity_of(
    reference: Callable[[np.ndarray], np.ndarray],
    onnx_bytes: bytes,
    sample: np.ndarray,
    output: str,
    tolerance: float = PARITY_TOLERANCE,
) -> Parity:
    """Parity of any artifact against a reference function on ``sample`` (used by custom graphs)."""
    sample = np.asarray(sample, dtype=np.float32)
    actual = OnnxModel(onnx_bytes, source=output).predict(sample)[output]
    return check_parity(reference(sample), actual, output=output, tolerance=tolerance)
