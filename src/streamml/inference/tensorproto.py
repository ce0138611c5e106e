"""TensorFlow's ``TensorProto`` and NumPy, both ways: TF Serving's server front end and its client share it.

A tensor arrives as ``tensor_content`` (raw little-endian bytes) or in the typed ``*_val`` fields
(``string_val`` for strings); one typed value fills the whole shape, as in TensorFlow. Every decode checks
the declared dtype and shape against the values and the limits before it allocates.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from streamml.inference.tensors import InvalidTensor, Limits, check_shape
from streamml.inference.tfserving_protos import tensor_pb2, types_pb2

#: TensorFlow DataType -> (NumPy dtype, the typed field of TensorProto that carries it)
TYPES: dict[int, tuple[np.dtype[Any], str]] = {
    types_pb2.DT_FLOAT: (np.dtype("<f4"), "float_val"),
    types_pb2.DT_DOUBLE: (np.dtype("<f8"), "double_val"),
    types_pb2.DT_HALF: (np.dtype("<f2"), "half_val"),
    types_pb2.DT_INT8: (np.dtype("<i1"), "int_val"),
    types_pb2.DT_INT16: (np.dtype("<i2"), "int_val"),
    types_pb2.DT_INT32: (np.dtype("<i4"), "int_val"),
    types_pb2.DT_INT64: (np.dtype("<i8"), "int64_val"),
    types_pb2.DT_UINT8: (np.dtype("<u1"), "int_val"),
    types_pb2.DT_UINT16: (np.dtype("<u2"), "int_val"),
    types_pb2.DT_UINT32: (np.dtype("<u4"), "uint32_val"),
    types_pb2.DT_UINT64: (np.dtype("<u8"), "uint64_val"),
    types_pb2.DT_BOOL: (np.dtype(np.bool_), "bool_val"),
    types_pb2.DT_STRING: (np.dtype(object), "string_val"),
}
BY_DTYPE = {dtype.str: code for code, (dtype, _) in TYPES.items() if code != types_pb2.DT_STRING}


def from_proto(name: str, proto: tensor_pb2.TensorProto, limits: Limits) -> np.ndarray:
    """A NumPy array from a ``TensorProto``, checked against its declared dtype, shape and the limits."""
    kind = TYPES.get(proto.dtype)
    if kind is None:
        raise InvalidTensor(f"input '{name}': unsupported dtype {types_pb2.DataType.Name(proto.dtype)}")
    dtype, field = kind
    if proto.tensor_shape.unknown_rank:
        raise InvalidTensor(f"input '{name}' needs a known shape")
    shape = [int(d.size) for d in proto.tensor_shape.dim]
    count = check_shape(name, shape, limits)
    described = f"input '{name}': {types_pb2.DataType.Name(proto.dtype)} of shape {shape}"
    if proto.tensor_content:
        if dtype.kind == "O":
            raise InvalidTensor(f"{described} must use string_val, not tensor_content")
        if len(proto.tensor_content) != count * dtype.itemsize:
            raise InvalidTensor(f"{described} needs {count * dtype.itemsize} bytes, tensor_content has "
                                f"{len(proto.tensor_content)}")  # fmt: skip
        return np.frombuffer(proto.tensor_content, dtype=dtype).reshape(shape)
    values = getattr(proto, field)
    if len(values) not in (count, 1) or (len(values) == 1 and count == 0):
        raise InvalidTensor(f"{described} needs {count} values in {field} (or tensor_content), got {len(values)}")
    if dtype.kind == "O":
        array = np.empty(len(values), dtype=object)
        array[:] = list(values)
    elif field == "half_val":
        array = np.asarray(values, dtype=np.uint16).view(np.float16)
    else:
        array = np.asarray(values, dtype=dtype)
    if len(values) != count:  # one value fills the shape, as TensorFlow does
        return np.full(shape, array[0], dtype=array.dtype)
    return array.reshape(shape)


def to_proto(array: np.ndarray, *, content: bool = False) -> tensor_pb2.TensorProto:
    """A ``TensorProto`` for a NumPy array: typed fields (``string_val`` for strings), or with ``content``
    numbers as raw ``tensor_content`` (one copy, not one Python object per element)."""
    proto = tensor_pb2.TensorProto()
    for dim in array.shape:
        proto.tensor_shape.dim.add(size=int(dim))
    flat = array.reshape(-1)
    if array.dtype.kind in "OUS":
        proto.dtype = types_pb2.DT_STRING
        proto.string_val.extend(v if isinstance(v, bytes) else str(v).encode() for v in flat)
        return proto
    code = BY_DTYPE.get(array.dtype.newbyteorder("<").str if array.dtype.byteorder == ">" else array.dtype.str)
    if code is None:
        raise InvalidTensor(f"no TensorFlow dtype for an output of {array.dtype}")
    proto.dtype = code
    if content:
        proto.tensor_content = np.ascontiguousarray(flat, dtype=flat.dtype.newbyteorder("<")).tobytes()
        return proto
    _, field = TYPES[code]
    values = flat.view(np.uint16).astype(np.int32) if field == "half_val" else flat
    getattr(proto, field).extend(values.tolist())
    return proto
