"""IMAGE_PIXELS: PNG/JPEG images in records (bytes, base64 or paths) as a model's input pixels, broker-free."""

from __future__ import annotations

import base64
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from streamml.errors import SqlError
from streamml.ingest.digits import digit_picture
from streamml.sql import SqlEngine


@pytest.fixture
def engine() -> SqlEngine:
    engine = SqlEngine()
    engine.execute(
        "CREATE STREAM pictures (ID BIGINT, IMG VARCHAR, RAW BYTES) WITH (KAFKA_TOPIC='p', VALUE_FORMAT='JSON');"
    )
    return engine


def test_base64_and_bytes_decode_to_the_original_pixels(engine: SqlEngine) -> None:
    from sklearn.datasets import load_digits

    digits = load_digits().data[:5]
    pngs = [digit_picture(d, 32) for d in digits]
    batch = pa.table({"ID": pa.array(range(5), pa.int64()), "IMG": [base64.b64encode(p).decode() for p in pngs],
                      "RAW": pa.array(pngs, pa.binary())})  # fmt: skip
    plan = engine.plan("SELECT IMAGE_PIXELS(IMG, 8, 8, 16) AS A, IMAGE_PIXELS(RAW, 8, 8, 16) AS B FROM pictures;")
    out = plan.executor().execute(batch)
    for name in ("A", "B"):
        decoded = np.asarray(out.table.column(name).to_pylist())
        assert decoded.shape == (5, 64) and np.abs(decoded - digits).max() <= 16 / 255  # 8-bit rounding only
    jpeg = digit_picture(digits[0], 32, fmt="JPEG")
    again = plan.executor().execute(pa.table({"ID": pa.array([9], pa.int64()), "IMG": [base64.b64encode(jpeg).decode()],
                                              "RAW": pa.array([jpeg], pa.binary())}))  # fmt: skip
    assert np.abs(np.asarray(again.table.column("B").to_pylist()[0]) - digits[0]).max() < 4  # lossy, but a digit


def test_undecodable_images_are_set_aside_with_the_reason(engine: SqlEngine) -> None:
    good = base64.b64encode(digit_picture(np.zeros(64))).decode()
    batch = pa.table({"ID": pa.array(range(4), pa.int64()), "IMG": [good, base64.b64encode(b"not an image").decode(),
                      None, good], "RAW": pa.array([b""] * 4, pa.binary())})  # fmt: skip
    out = engine.plan("SELECT ID, IMAGE_PIXELS(IMG, 4, 4) AS P FROM pictures;").executor().execute(batch)
    assert out.table.column("ID").to_pylist() == [0, 3] and len(out.table.column("P").to_pylist()[0]) == 16
    reasons = {f.index: f.reason for f in out.failures}
    assert set(reasons) == {1, 2} and "cannot decode the image" in reasons[1] and "NULL" in reasons[2]


def test_paths_are_read_only_under_the_image_root(
    engine: SqlEngine, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "images").mkdir()
    (tmp_path / "images" / "one.png").write_bytes(digit_picture(np.full(64, 16.0)))
    (tmp_path / "secret.png").write_bytes(digit_picture(np.zeros(64)))
    batch = pa.table({"ID": pa.array([0, 1], pa.int64()), "IMG": ["one.png", "../secret.png"],
                      "RAW": pa.array([b"", b""], pa.binary())})  # fmt: skip
    plan = engine.plan("SELECT ID, IMAGE_PIXELS(IMG, 8, 8) AS P FROM pictures;")
    refused = plan.executor().execute(batch)
    assert refused.table.num_rows == 0 and "STREAMML_IMAGE_ROOT" in refused.failures[0].reason
    monkeypatch.setenv("STREAMML_IMAGE_ROOT", str(tmp_path / "images"))
    out = plan.executor().execute(batch)
    assert out.table.column("ID").to_pylist() == [0] and out.table.column("P").to_pylist()[0] == [1.0] * 64
    assert "outside STREAMML_IMAGE_ROOT" in out.failures[0].reason


def test_wrong_calls_are_refused_when_planned(engine: SqlEngine) -> None:
    with pytest.raises(SqlError, match="BYTES or VARCHAR"):
        engine.plan("SELECT IMAGE_PIXELS(ID, 8, 8) FROM pictures;")
    with pytest.raises(SqlError, match="between 1 and 4096"):
        engine.plan("SELECT IMAGE_PIXELS(IMG, 0, 8) FROM pictures;")
    with pytest.raises(SqlError, match="takes"):
        engine.plan("SELECT IMAGE_PIXELS(IMG) FROM pictures;")
