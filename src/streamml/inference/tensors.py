"""Tensors on the wire: the Open Inference Protocol's datatypes, its JSON and binary tensor forms, and limits.

Shared by the model server's OIP v2 front ends and the remote client. JSON tensors carry ``data`` flat or
nested, row-major; binary tensors are raw little-endian bytes, BYTES elements each a 4-byte little-endian length
and the bytes. Every decode checks the element count against the declared shape and the limits before it
allocates, so a request cannot make the server allocate more than it declared and the limits allow.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from streamml.errors import InputError

#: OIP datatype -> NumPy dtype (BYTES are object arrays of bytes/str)
DATATYPES: dict[str, np.dtype[Any]] = {
    "BOOL": np.dtype(np.bool_),
    "UINT8": np.dtype("<u1"),
    "UINT16": np.dtype("<u2"),
    "UINT32": np.dtype("<u4"),
    "UINT64": np.dtype("<u8"),
    "INT8": np.dtype("<i1"),
    "INT16": np.dtype("<i2"),
    "INT32": np.dtype("<i4"),
    "INT64": np.dtype("<i8"),
    "FP16": np.dtype("<f2"),
    "FP32": np.dtype("<f4"),
    "FP64": np.dtype("<f8"),
    "BYTES": np.dtype(object),
}
_BY_KIND = {dtype.str: name for name, dtype in DATATYPES.items() if name != "BYTES"}
#: signature dtype names (see :mod:`streamml.models.signature`) -> OIP datatype
SIGNATURE_DATATYPES = {"string": "BYTES", "bool": "BOOL"} | {
    np.dtype(dtype).name: name for name, dtype in DATATYPES.items() if name not in ("BYTES", "BOOL")
}


#: OIP datatype -> the field of gRPC's InferTensorContents that carries it (typed, not raw, contents)
CONTENTS_FIELDS = {
    "BOOL": "bool_contents",
    "INT8": "int_contents",
    "INT16": "int_contents",
    "INT32": "int_contents",
    "INT64": "int64_contents",
    "UINT8": "uint_contents",
    "UINT16": "uint_contents",
    "UINT32": "uint_contents",
    "UINT64": "uint64_contents",
    "FP32": "fp32_contents",
    "FP64": "fp64_contents",
    "BYTES": "bytes_contents",
}


class InvalidTensor(InputError):
    """A request's tensor does not decode or breaks a limit (the client's fault: 400 / INVALID_ARGUMENT)."""


@dataclass(frozen=True)
class Limits:
    """What one request may hold: bytes on the wire, elements per tensor, rows per request."""

    max_request_bytes: int = 64 * 1024 * 1024
    max_tensor_elements: int = 16 * 1024 * 1024
    max_batch_rows: int = 65_536


def datatype_of(array: np.ndarray) -> str:
    """The OIP datatype of a NumPy array (object and string arrays are BYTES)."""
    if array.dtype.kind in "OUS":
        return "BYTES"
    name = _BY_KIND.get(array.dtype.newbyteorder("<").str if array.dtype.byteorder == ">" else array.dtype.str)
    if name is None:
        raise InvalidTensor(f"no Open Inference Protocol datatype for {array.dtype}")
    return name


def check_shape(name: str, shape: Sequence[int], limits: Limits) -> int:
    """The element count of ``shape``, refusing negative dimensions and shapes past the limits."""
    dims = [int(d) for d in shape]
    if any(d < 0 for d in dims):
        raise InvalidTensor(f"input '{name}': shape {dims} has a negative dimension")
    count = int(np.prod(dims, dtype=np.int64)) if dims else 1
    if count > limits.max_tensor_elements:
        raise InvalidTensor(f"input '{name}': {count} elements, more than the limit of {limits.max_tensor_elements}")
    if dims and dims[0] > limits.max_batch_rows:
        raise InvalidTensor(f"input '{name}': {dims[0]} rows, more than the limit of {limits.max_batch_rows}")
    return count


def dtype_for(name: str, datatype: str) -> np.dtype[Any]:
    dtype = DATATYPES.get(datatype.upper())
    if dtype is None:
        raise InvalidTensor(f"input '{name}': unknown datatype '{datatype}'", hint=f"use one of {', '.join(DATATYPES)}")
    return dtype


def from_json(name: str, datatype: str, shape: Sequence[int], data: Any, limits: Limits) -> np.ndarray:
    """A tensor from its JSON form (``data`` flat or nested)."""
    count = check_shape(name, shape, limits)
    dtype = dtype_for(name, datatype)
    try:
        if dtype.kind == "O":
            array = np.asarray(data, dtype=object).reshape(-1)
            array = np.asarray([v.encode() if isinstance(v, str) else v for v in array], dtype=object)
        else:
            array = np.asarray(data, dtype=dtype).reshape(-1)
    except (TypeError, ValueError) as exc:
        raise InvalidTensor(f"input '{name}': data is not {datatype}: {exc}") from None
    if array.size != count:
        raise InvalidTensor(f"input '{name}': shape {list(shape)} needs {count} values, data has {array.size}")
    return array.reshape([int(d) for d in shape])


def from_bytes(name: str, datatype: str, shape: Sequence[int], raw: bytes | memoryview, limits: Limits) -> np.ndarray:
    """A tensor from its binary form."""
    count = check_shape(name, shape, limits)
    dtype = dtype_for(name, datatype)
    if dtype.kind == "O":
        return np.asarray(_split_bytes(name, raw, count), dtype=object).reshape([int(d) for d in shape])
    if len(raw) != count * dtype.itemsize:
        raise InvalidTensor(
            f"input '{name}': shape {list(shape)} of {datatype} needs {count * dtype.itemsize} bytes, got {len(raw)}"
        )
    return np.frombuffer(raw, dtype=dtype).reshape([int(d) for d in shape])


def to_bytes(array: np.ndarray) -> bytes:
    """The binary form of a tensor."""
    if array.dtype.kind in "OUS":
        parts = []
        for value in array.reshape(-1):
            item = value if isinstance(value, bytes) else str(value).encode()
            parts += [struct.pack("<I", len(item)), item]
        return b"".join(parts)
    return np.ascontiguousarray(array, dtype=array.dtype.newbyteorder("<")).tobytes()


def to_json_data(array: np.ndarray) -> np.ndarray | list[str]:
    """The flat JSON ``data`` of a tensor, for ``orjson.dumps(..., option=OPT_SERIALIZE_NUMPY)``: numbers stay
    a NumPy array (orjson writes NaN and infinities as null), BYTES become text."""
    flat = array.reshape(-1)
    if array.dtype.kind in "OUS":
        return [v.decode(errors="replace") if isinstance(v, bytes) else str(v) for v in flat]
    if array.dtype == np.float16:
        flat = flat.astype(np.float32)
    return np.ascontiguousarray(flat)


def _split_bytes(name: str, raw: bytes | memoryview, count: int) -> list[bytes]:
    view, pos = memoryview(raw), 0
    items: list[bytes] = []
    while pos < len(view):
        if pos + 4 > len(view):
            raise InvalidTensor(f"input '{name}': BYTES element {len(items)} has a truncated length prefix")
        (length,) = struct.unpack_from("<I", view, pos)
        pos += 4
        if pos + length > len(view):
            raise InvalidTensor(f"input '{name}': BYTES element {len(items)} runs past the end of its data")
        items.append(bytes(view[pos : pos + length]))
        pos += length
        if len(items) > count:
            break
    if len(items) != count:
        raise InvalidTensor(f"input '{name}': shape needs {count} BYTES elements, data has {len(items)}")
    return items
