"""ONNX graph surgery: put preprocessing and scoring inside the exported graph.

:func:`reconstruction_scorer` wraps an autoencoder graph (``z -> z_hat``) so that the artifact reads raw
features and returns the anomaly score itself::

    X -> (X - mean) / scale = z -> autoencoder -> z_hat -> mean((z_hat - z)^2, axis=1) = score
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper


def _opset(model: onnx.ModelProto) -> int:
    return next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 17)


def reconstruction_scorer(
    autoencoder: onnx.ModelProto,
    mean: np.ndarray,
    scale: np.ndarray,
    *,
    input_name: str = "X",
    score_name: str = "score",
    keep_reconstruction: bool = False,
) -> onnx.ModelProto:
    """A model ``X -> score`` (reconstruction MSE of the standardised input) around ``autoencoder``.

    ``autoencoder`` must have one float input (the standardised features) and one float output of the same
    width (their reconstruction). ``mean``/``scale`` are the scaler's statistics, baked in as initializers.
    """
    graph = autoencoder.graph
    if len(graph.input) != 1 or len(graph.output) != 1:
        raise ValueError("the autoencoder graph must have exactly one input and one output")
    inner_in, inner_out = graph.input[0].name, graph.output[0].name
    width = int(np.asarray(mean).size)
    opset = _opset(autoencoder)

    initializers = [
        numpy_helper.from_array(np.asarray(mean, dtype=np.float32).reshape(1, width), "ae_mean"),
        numpy_helper.from_array(np.asarray(scale, dtype=np.float32).reshape(1, width), "ae_scale"),
    ]
    prefix = [
        helper.make_node("Sub", [input_name, "ae_mean"], ["ae_centered"], name="ae_center"),
        helper.make_node("Div", ["ae_centered", "ae_scale"], [inner_in], name="ae_standardise"),
    ]
    initializers.append(numpy_helper.from_array(np.array([-1, width], dtype=np.int64), "ae_shape"))
    suffix = [
        # converters may flatten the reconstruction; restore [N, width] before comparing
        helper.make_node("Reshape", [inner_out, "ae_shape"], ["ae_reconstruction"], name="ae_reshape"),
        helper.make_node("Sub", ["ae_reconstruction", inner_in], ["ae_error"], name="ae_error"),
        helper.make_node("Mul", ["ae_error", "ae_error"], ["ae_squared"], name="ae_square"),
    ]
    if opset >= 18:
        initializers.append(numpy_helper.from_array(np.array([1], dtype=np.int64), "ae_axes"))
        suffix.append(
            helper.make_node("ReduceMean", ["ae_squared", "ae_axes"], [score_name], keepdims=0, name="ae_mse")
        )
    else:
        suffix.append(helper.make_node("ReduceMean", ["ae_squared"], [score_name], axes=[1], keepdims=0, name="ae_mse"))

    outputs = [helper.make_tensor_value_info(score_name, TensorProto.FLOAT, [None])]
    if keep_reconstruction:
        outputs.append(helper.make_tensor_value_info("ae_reconstruction", TensorProto.FLOAT, [None, width]))
    new_graph = helper.make_graph(
        [*prefix, *graph.node, *suffix],
        "reconstruction_scorer",
        [helper.make_tensor_value_info(input_name, TensorProto.FLOAT, [None, width])],
        outputs,
        initializer=[*initializers, *graph.initializer],
    )
    model = helper.make_model(new_graph, opset_imports=list(autoencoder.opset_import))
    model.ir_version = autoencoder.ir_version
    model.producer_name = "streamml"
    onnx.checker.check_model(model)
    return model
