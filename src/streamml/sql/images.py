"""``IMAGE_PIXELS``: images in records (PNG/JPEG bytes, base64 text, or a file path) as a model's input pixels.

``IMAGE_PIXELS(image, height, width[, scale])`` decodes each image of a batch with Pillow, converts it to
grayscale, resizes it to ``width`` x ``height`` (area averaging when it shrinks, bilinear when it grows) and
returns its pixels row by row as ``ARRAY<DOUBLE>``, scaled from 0..255 to 0..``scale`` (default 1; 16 for
scikit-learn's digits). An image model's graph reads the flat pixels as ``[N, 1, height, width]``, so
``PREDICT('digits', IMAGE_PIXELS(png, 8, 8, 16))`` scores a stream of pictures.

``image`` is ``BYTES`` (the file's bytes) or ``VARCHAR``: base64 text (a ``data:`` URL prefix is dropped), or
else a path, read only under the folder ``STREAMML_IMAGE_ROOT`` names (a record must not choose which files
a runner reads). A record whose image cannot be read or decoded is set aside with the reason (the runtime
dead-letters it) and the batch goes on. Decoding is one Pillow call per image (no decoder takes a batch of
PNGs at once); the rest is one NumPy array per batch.
"""

from __future__ import annotations

import base64
import binascii
import io
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from streamml.errors import SqlError
from streamml.sql.types import SqlType
from streamml.sql.udf import UserFunction

IMAGE_ROOT_ENV = "STREAMML_IMAGE_ROOT"
PIXELS = SqlType("ARRAY", (SqlType("DOUBLE"),))


def _result_type(arg_types: list[SqlType], constants: list[Any]) -> SqlType:
    if len(arg_types) not in (3, 4):
        raise SqlError("IMAGE_PIXELS takes (image, height, width[, scale])")
    if arg_types[0].name not in ("BYTES", "STRING", "VARCHAR"):
        raise SqlError(f"IMAGE_PIXELS reads BYTES or VARCHAR images, not {arg_types[0]}")
    sizes = constants[1:3] if len(constants) >= 3 else []
    if len(sizes) == 2 and all(isinstance(s, int) for s in sizes) and not all(0 < s <= 4096 for s in sizes):
        raise SqlError("IMAGE_PIXELS: height and width must be between 1 and 4096")
    return PIXELS


def _image_bytes(value: Any) -> bytes:
    if isinstance(value, bytes):
        return value
    text = str(value).strip()
    if text.startswith("data:") and "," in text:
        text = text.split(",", 1)[1]
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        return _read_path(text)


def _read_path(text: str) -> bytes:
    root = os.environ.get(IMAGE_ROOT_ENV)
    if not root:
        raise ValueError(f"not base64, and image paths are read only under {IMAGE_ROOT_ENV}, which is not set")
    base = Path(root).resolve()
    path = (base / text).resolve()
    if not path.is_relative_to(base):
        raise ValueError(f"image path {text!r} is outside {IMAGE_ROOT_ENV}")
    return path.read_bytes()


def image_pixels(
    image: pa.Array,
    height: pa.Array,
    width: pa.Array,
    scale: pa.Array | None = None,
    *,
    reject: Callable[[np.ndarray, str], None],
) -> pa.Array:
    """The batch's images as grayscale pixels (see the module docstring)."""
    from PIL import Image, UnidentifiedImageError

    h, w = int(height[0].as_py()), int(width[0].as_py())
    factor = (float(scale[0].as_py()) if scale is not None else 1.0) / 255.0
    values = image.to_pylist()
    pixels = np.zeros((len(values), h * w), dtype=np.float64)
    failed = np.zeros(len(values), dtype=bool)
    reasons: dict[str, list[int]] = {}
    for i, value in enumerate(values):
        if value is None:
            failed[i] = True
            reasons.setdefault("IMAGE_PIXELS: the image is NULL", []).append(i)
            continue
        try:
            with Image.open(io.BytesIO(_image_bytes(value))) as picture:
                gray = picture.convert("L")
                shrinking = gray.width >= w and gray.height >= h
                resized = gray.resize((w, h), Image.Resampling.BOX if shrinking else Image.Resampling.BILINEAR)
                pixels[i] = np.asarray(resized, dtype=np.float64).reshape(-1)
        except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError) as exc:
            failed[i] = True
            reasons.setdefault(f"IMAGE_PIXELS: cannot decode the image: {exc}", []).append(i)
    for reason, rows in reasons.items():
        mask = np.zeros(len(values), dtype=bool)
        mask[rows] = True
        reject(mask, reason)
    offsets = pa.array(np.arange(len(values) + 1, dtype=np.int32) * (h * w))
    return pa.ListArray.from_arrays(offsets, pa.array((pixels * factor).reshape(-1)), mask=pa.array(failed))


IMAGE_PIXELS = UserFunction(
    name="IMAGE_PIXELS",
    func=image_pixels,
    returns=_result_type,
    description="IMAGE_PIXELS(image, height, width[, scale]): PNG/JPEG bytes, base64 or a path -> grayscale pixels",
    rejects=True,
)
