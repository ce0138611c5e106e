"""Model signatures: the named, typed tensors a model takes and returns."""

from __future__ import annotations

from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict

# ONNX Runtime type strings -> NumPy dtype names used in signatures.
_ORT_TYPES = {
    "tensor(float)": "float32",
    "tensor(double)": "float64",
    "tensor(float16)": "float16",
    "tensor(int64)": "int64",
    "tensor(int32)": "int32",
    "tensor(int16)": "int16",
    "tensor(int8)": "int8",
    "tensor(uint8)": "uint8",
    "tensor(bool)": "bool",
    "tensor(string)": "string",
}

Dim = int | str | None


class TensorSpec(BaseModel):
    """One named tensor: ``dtype`` is a NumPy dtype name (or ``"string"``); ``None``/str dims are dynamic."""

    model_config = ConfigDict(frozen=True)

    name: str
    dtype: str
    shape: list[Dim] | None = None

    @property
    def numpy_dtype(self) -> np.dtype[Any]:
        """The NumPy dtype to feed or expect (``object`` for strings)."""
        return np.dtype(object) if self.dtype == "string" else np.dtype(self.dtype)

    def compatible(self, other: TensorSpec) -> bool:
        """Same name, dtype and rank; fixed dimensions agree where both sides fix them."""
        if self.name != other.name or self.dtype != other.dtype:
            return False
        if self.shape is None or other.shape is None:
            return True
        if len(self.shape) != len(other.shape):
            return False
        return all(
            not (isinstance(a, int) and isinstance(b, int)) or a == b
            for a, b in zip(self.shape, other.shape, strict=True)
        )


class Signature(BaseModel):
    """The inputs and outputs of a model, in the order the model declares them."""

    model_config = ConfigDict(frozen=True)

    inputs: list[TensorSpec]
    outputs: list[TensorSpec]

    @classmethod
    def from_session(cls, session: Any) -> Signature:
        """Read the signature of an ``onnxruntime.InferenceSession``."""
        return cls(
            inputs=[_spec(arg) for arg in session.get_inputs()],
            outputs=[_spec(arg) for arg in session.get_outputs()],
        )

    @property
    def input_names(self) -> list[str]:
        return [spec.name for spec in self.inputs]

    @property
    def output_names(self) -> list[str]:
        return [spec.name for spec in self.outputs]

    def mismatches(self, other: Signature) -> list[str]:
        """Human-readable differences between this signature and ``other`` (empty when compatible)."""
        problems: list[str] = []
        for kind, mine, theirs in (
            ("input", self.inputs, other.inputs),
            ("output", self.outputs, other.outputs),
        ):
            if [s.name for s in mine] != [s.name for s in theirs]:
                problems.append(f"{kind} names {[s.name for s in mine]} != {[s.name for s in theirs]}")
                continue
            for a, b in zip(mine, theirs, strict=True):
                if not a.compatible(b):
                    problems.append(f"{kind} '{a.name}': {a.dtype}{a.shape} != {b.dtype}{b.shape}")
        return problems

    def describe(self) -> str:
        """One line such as ``X float32[N,30] -> score float32[N]``."""

        def fmt(specs: list[TensorSpec]) -> str:
            return ", ".join(
                f"{s.name} {s.dtype}[{','.join('N' if not isinstance(d, int) else str(d) for d in s.shape or [])}]"
                for s in specs
            )

        return f"{fmt(self.inputs)} -> {fmt(self.outputs)}"


def _spec(arg: Any) -> TensorSpec:
    dtype = _ORT_TYPES.get(arg.type, arg.type)
    shape = None if arg.shape is None else [d if isinstance(d, int | str) else None for d in arg.shape]
    return TensorSpec(name=arg.name, dtype=dtype, shape=shape)
