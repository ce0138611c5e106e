"""The Open Inference Protocol (v2) independent of transport: requests, answers and metadata.

The REST and gRPC front ends decode their wire form into an :class:`InferRequest`, call :func:`infer`, and
encode the :class:`InferAnswer`; metadata is built once here for both. Model metadata lists inputs and outputs
with OIP datatypes and ``-1`` for a variable dimension; the platform is ``onnxruntime_onnx`` as Triton names it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from streamml.inference.service import Served
from streamml.inference.tensors import SIGNATURE_DATATYPES, InvalidTensor
from streamml.models.signature import TensorSpec
from streamml.serve.dataplane import DataPlane

#: protocol extensions this server implements, as ``GET /v2`` advertises them
EXTENSIONS = ["binary_tensor_data", "model_repository"]
PLATFORM = "onnxruntime_onnx"


@dataclass
class InferRequest:
    """One decoded inference request."""

    model: str
    version: str = ""
    id: str = ""
    inputs: dict[str, np.ndarray] = field(default_factory=dict)
    #: requested outputs by name -> whether that output goes binary; None: every output
    outputs: dict[str, bool] | None = None
    binary_outputs: bool = False


@dataclass
class InferAnswer:
    """The outputs of one request, in the order to send them, and whether each goes binary."""

    served: Served
    id: str
    outputs: list[tuple[str, np.ndarray, bool]]

    @property
    def model_name(self) -> str:
        return self.served.version.name

    @property
    def model_version(self) -> str:
        return str(self.served.version.version)


async def infer(plane: DataPlane, request: InferRequest) -> InferAnswer:
    """Score ``request`` through the data plane and pick the outputs it asked for."""
    served = plane.resolve(request.model, request.version or None)
    known = [spec.name for spec in served.model.signature.outputs]
    if request.outputs is not None:
        unknown = [name for name in request.outputs if name not in known]
        if unknown:
            raise InvalidTensor(f"{served.label} has no output {unknown}", hint=f"its outputs: {', '.join(known)}")
    raw = await plane.infer(served, request.inputs)
    wanted = request.outputs if request.outputs is not None else dict.fromkeys(known, request.binary_outputs)
    return InferAnswer(served, request.id, [(name, np.asarray(raw[name]), binary) for name, binary in wanted.items()])


def tensor_metadata(spec: TensorSpec) -> dict[str, Any]:
    shape = [d if isinstance(d, int) and d >= 0 else -1 for d in (spec.shape or [-1])]
    return {"name": spec.name, "datatype": SIGNATURE_DATATYPES.get(spec.dtype, spec.dtype.upper()), "shape": shape}


def model_metadata(plane: DataPlane, served: Served) -> dict[str, Any]:
    """``GET /v2/models/NAME[/versions/V]``'s answer (and ModelMetadata's, field for field)."""
    signature = served.model.signature
    return {
        "name": served.version.name,
        "versions": [str(v) for v in plane.versions(served.version.name)],
        "platform": PLATFORM,
        "inputs": [tensor_metadata(spec) for spec in signature.inputs],
        "outputs": [tensor_metadata(spec) for spec in signature.outputs],
    }


def model_config(plane: DataPlane, served: Served) -> dict[str, Any]:
    """The model's configuration as Triton writes it (``GET .../config``, gRPC ModelConfig), for Triton's own
    clients and tools: when every input has a variable first dimension that is the batch (``max_batch_size``
    from the batching policy, ``dims`` without it), else ``max_batch_size`` 0 and the whole shapes."""
    signature = served.model.signature
    tensors = {key: [tensor_metadata(spec) for spec in getattr(signature, key)] for key in ("inputs", "outputs")}
    batched = all(t["shape"] and t["shape"][0] == -1 for t in tensors["inputs"])
    policy = plane.batcher.policy(served.version.name)

    def entries(key: str) -> list[dict[str, Any]]:
        out = []
        for t in tensors[key]:
            dims = t["shape"][1:] if batched and t["shape"] else t["shape"]
            kind = "TYPE_STRING" if t["datatype"] == "BYTES" else f"TYPE_{t['datatype']}"
            out.append({"name": t["name"], "data_type": kind, "dims": dims or [1]})
        return out

    config: dict[str, Any] = {
        "name": served.version.name,
        "platform": PLATFORM,
        "backend": "onnxruntime",
        "max_batch_size": policy.max_batch_size if batched else 0,
        "input": entries("inputs"),
        "output": entries("outputs"),
    }
    if batched and policy.max_batch_size > 1:
        config["dynamic_batching"] = {"max_queue_delay_microseconds": int(policy.max_wait_ms * 1000)}
    return config


def server_metadata(plane: DataPlane) -> dict[str, Any]:
    return {"name": plane.server_name, "version": plane.server_version, "extensions": list(EXTENSIONS)}


def repository_index(plane: DataPlane) -> list[dict[str, str]]:
    """Every served model with the version in force and its state (the model repository extension)."""
    serving = {ref: s for ref, s in plane.service.serving().items() if "@" not in ref and ":" not in ref}
    index = []
    for name in plane.names():
        served = serving.get(name) if name not in plane.unloaded else None
        entry = {"name": name, "version": str(served.version.version) if served else "",
                 "state": "READY" if served is not None else "UNAVAILABLE"}  # fmt: skip
        if name in plane.unloaded:
            entry["reason"] = "unloaded"
        index.append(entry)
    return index
