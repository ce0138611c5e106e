"""Labelled pictures of handwritten digits as records: scikit-learn's 8x8 digits, upscaled to a picture size.

Fashion-MNIST cannot be downloaded here; scikit-learn ships 1,797 8x8 digits (grey levels 0..16). Each one
becomes a grayscale PNG (or JPEG) of ``size`` x ``size`` pixels, upscaled by repetition, in a record
``{"ID": i, "IMAGE": "<base64>", "LABEL": digit}``, the shape a camera or an upload service would produce and
``IMAGE_PIXELS`` turns back into a model's input.

    >>> records, labels = digit_records(range(3), size=16)
    >>> sorted(records[0]), labels.tolist()
    (['ID', 'IMAGE', 'LABEL'], [0, 1, 2])
"""

from __future__ import annotations

import base64
import io
from collections.abc import Iterable
from functools import cache
from typing import Any

import numpy as np

#: the digits' grey levels run 0..16
DIGIT_MAX = 16


@cache
def load() -> tuple[np.ndarray, np.ndarray]:
    """(pixels (n, 64) in 0..16, labels (n,)) of scikit-learn's digits, loaded once."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    return digits.data, digits.target


def digit_picture(pixels: np.ndarray, size: int = 28, fmt: str = "PNG") -> bytes:
    """One 8x8 digit (grey levels 0..16) as a ``size`` x ``size`` grayscale picture in ``fmt``."""
    from PIL import Image

    gray = np.round(np.asarray(pixels, np.float64).reshape(8, 8) * 255 / DIGIT_MAX).astype(np.uint8)
    image = Image.fromarray(gray, mode="L").resize((size, size), Image.Resampling.NEAREST)
    out = io.BytesIO()
    image.save(out, format=fmt)
    return out.getvalue()


def digit_records(ids: Iterable[int], size: int = 28, *, label: bool = True) -> tuple[list[dict[str, Any]], np.ndarray]:
    """Records of the digits numbered ``ids`` (``LABEL`` left out unless ``label``), and their labels."""
    pixels, labels = load()
    chosen = np.fromiter(ids, dtype=np.int64)
    records = []
    for i in chosen.tolist():
        record: dict[str, Any] = {"ID": i, "IMAGE": base64.b64encode(digit_picture(pixels[i], size)).decode()}
        if label:
            record["LABEL"] = int(labels[i])
        records.append(record)
    return records, labels[chosen]
