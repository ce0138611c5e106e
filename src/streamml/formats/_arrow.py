"""Arrow helpers shared by the formats: type predicates, rebuilt nested arrays, case-insensitive names."""

from __future__ import annotations

import pyarrow as pa
import pyarrow.types as pat


def is_nested(t: pa.DataType) -> bool:
    """True for struct, list-like and map types."""
    return pat.is_struct(t) or is_list_like(t) or pat.is_map(t)


def is_list_like(t: pa.DataType) -> bool:
    """True for list, large list and fixed-size list types."""
    return pat.is_list(t) or pat.is_large_list(t) or pat.is_fixed_size_list(t)


def rebuild_list(arr: pa.Array, values: pa.Array, target: pa.DataType) -> pa.Array:
    """A list-like array with the offsets and nulls of ``arr`` and new child ``values``."""
    mask = arr.is_null() if arr.null_count else None
    if pat.is_fixed_size_list(arr.type):
        flat = values.slice(arr.offset * arr.type.list_size, len(arr) * arr.type.list_size)
        return pa.FixedSizeListArray.from_arrays(flat, type=target, mask=mask)
    cls = pa.LargeListArray if pat.is_large_list(arr.type) else pa.ListArray
    return cls.from_arrays(arr.offsets, values, type=target, mask=mask)


def rebuild_struct(arr: pa.StructArray, children: list[pa.Array], target: pa.DataType) -> pa.Array:
    """A struct array with the nulls of ``arr`` and new ``children`` (already sliced like ``arr``)."""
    mask = arr.is_null() if arr.null_count else None
    return pa.StructArray.from_arrays(children, fields=list(target), mask=mask)


def struct_children(arr: pa.StructArray) -> list[pa.Array]:
    """The children of a struct array, sliced to the array's offset and length."""
    return [arr.field(i) for i in range(arr.type.num_fields)]


def casefold_duplicates(names: list[str]) -> list[str]:
    """Names that collide when compared case-insensitively (ksqlDB treats them as one column)."""
    seen: dict[str, str] = {}
    dups: list[str] = []
    for name in names:
        key = name.lower()
        if key in seen:
            dups.append(name)
        seen[key] = name
    return dups
