from __future__ import annotations

import hashlib
import json
import os
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import fsspec
import numpy as np
import pytest

from streamml.errors import RegistryError
from streamml.models.card import ModelCard, OutputSpec, Parity
from streamml.models.events import ModelEvent
from streamml.models.registry import ModelRef, Registry
from streamml.models.signature import Signature, TensorSpec


def listing(root: Path) -> list[str]:
    if not root.exists():
        return []
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


def card(**changes: object) -> ModelCard:
    base = ModelCard(name="m", features=["a", "b", "c"], output=OutputSpec.regression("variable"))
    return base.with_updates(**changes) if changes else base


def test_versions_are_numbered_and_immutable(linear_onnx: bytes, registry_root: Path, tmp_path: Path) -> None:
    plot = tmp_path / "roc.png"
    plot.write_bytes(b"\x89PNG fake")
    registry = Registry(registry_root)
    first = registry.register("fraud", linear_onnx, card(), plots=[plot])
    digest = hashlib.sha256((registry_root / "fraud/1/model.onnx").read_bytes()).hexdigest()
    second = registry.register("fraud", linear_onnx, card())
    assert (first.version, second.version) == (1, 2)
    assert {"model.onnx", "card.json", "plots"} <= set(os.listdir(registry_root / "fraud/1"))
    assert (registry_root / "fraud/1/plots/roc.png").read_bytes() == b"\x89PNG fake"
    assert first.card.plots == ["plots/roc.png"] and first.plot_uris[0].endswith("fraud/1/plots/roc.png")
    assert hashlib.sha256((registry_root / "fraud/1/model.onnx").read_bytes()).hexdigest() == digest
    assert registry.manifest("fraud").versions[0].sha256 == digest
    assert first.card.version == 1 and first.card.signature is not None  # filled in from the artifact
    assert registry.list() == ["fraud"]
    assert [v.version for v in registry.versions("fraud")] == [1, 2]
    assert not [p for p in os.listdir(registry_root / "fraud") if p.startswith(".")]  # no temp or lock left


def test_get_by_every_reference_form(linear_onnx: bytes, registry_root: Path) -> None:
    registry = Registry(registry_root)
    for _ in range(3):
        registry.register("fraud", linear_onnx, card())
    assert registry.get("fraud").version == 3  # no production alias yet: latest
    registry.promote("fraud", 2)
    registry.set_alias("fraud", "staging", 3)
    assert registry.get("fraud").version == 2
    assert registry.get("fraud@production").version == 2
    assert registry.get("fraud@staging").version == 3
    assert registry.get("fraud:1").version == 1
    assert registry.get("fraud:latest").version == 3
    assert registry.get("fraud:2").aliases == ("production",)
    model = registry.get("fraud@production").load()
    out = model.predict({"a": np.array([1.0]), "b": np.array([0.0]), "c": np.array([0.0])})
    assert out["variable"][0, 0] == pytest.approx(4.0, abs=1e-3)
    for ref, message in [
        ("fraud:9", "no version 9"),
        ("fraud@canary", "no alias 'canary'"),
        ("ghost", "not registered"),
        ("fraud:x", "invalid model version"),
        ("bad/name", "invalid model reference"),
    ]:
        with pytest.raises(RegistryError, match=message):
            registry.get(ref)


def test_ref_parsing() -> None:
    assert ModelRef.parse("fraud") == ModelRef("fraud")
    assert ModelRef.parse("fraud@staging") == ModelRef("fraud", alias="staging")
    assert ModelRef.parse("fraud:12") == ModelRef("fraud", version=12)


def test_promote_and_rollback_events(linear_onnx: bytes, registry_root: Path) -> None:
    registry = Registry(registry_root)
    for _ in range(3):
        registry.register("fraud", linear_onnx, card())
    e1 = registry.promote("fraud", 1)
    assert (e1.action, e1.version, e1.alias, e1.previous_version) == ("promote", 1, "production", None)
    registry.promote("fraud", 2)
    e3 = registry.promote("fraud", 3)
    assert e3.previous_version == 2 and e3.key == "fraud@production"
    back = registry.rollback("fraud")
    assert (back.action, back.version, back.previous_version) == ("rollback", 2, 3)
    assert registry.get("fraud").version == 2
    assert registry.rollback("fraud").version == 1
    with pytest.raises(RegistryError, match="nothing to roll back"):
        registry.rollback("fraud")
    with pytest.raises(RegistryError, match="no alias 'staging'"):
        registry.rollback("fraud", "staging")
    actions = [e.action for e in registry.history("fraud")]
    assert actions == ["register"] * 3 + ["promote"] * 3 + ["rollback"] * 2
    again = ModelEvent.from_json(back.to_json())
    assert again == back and again.timestamp.tzinfo is not None


def test_event_json_is_plain(linear_onnx: bytes, registry_root: Path) -> None:
    registry = Registry(registry_root)
    registry.register("m", linear_onnx, card())
    payload = json.loads(registry.promote("m", 1).to_json())
    assert {"action", "model", "version", "alias", "previous_version", "timestamp"} <= set(payload)


def test_delete_refuses_aliased_versions_and_never_reuses_numbers(linear_onnx: bytes, registry_root: Path) -> None:
    registry = Registry(registry_root)
    for _ in range(2):
        registry.register("m", linear_onnx, card())
    registry.promote("m", 2)
    with pytest.raises(RegistryError, match="aliased as production"):
        registry.delete("m", 2)
    events = registry.delete("m", 2, force=True)
    assert [e.action for e in events] == ["remove_alias", "delete"]
    assert not (registry_root / "m/2").exists()
    assert registry.get("m").version == 1  # alias gone: latest
    assert registry.register("m", linear_onnx, card()).version == 3
    registry.delete("m", 1)
    assert [v.version for v in registry.versions("m")] == [3]


def test_corrupt_artifact_is_refused_and_nothing_is_written(linear_onnx: bytes, registry_root: Path) -> None:
    registry = Registry(registry_root)
    truncated = linear_onnx[: len(linear_onnx) // 2]
    with pytest.raises(RegistryError, match="corrupt"):
        registry.register("fresh", truncated, card())
    assert listing(registry_root) == []
    registry.register("fraud", linear_onnx, card())
    before = listing(registry_root)
    path = registry_root.parent / "truncated.onnx"
    path.write_bytes(truncated)
    with pytest.raises(RegistryError, match=r"truncated\.onnx"):
        registry.register("fraud", path, card())
    assert listing(registry_root) == before
    assert [v.version for v in registry.versions("fraud")] == [1]


def test_signature_and_feature_mismatches_are_refused(linear_onnx: bytes, registry_root: Path) -> None:
    registry = Registry(registry_root)
    registry.register("fraud", linear_onnx, card())
    before = listing(registry_root)
    wrong = Signature(
        inputs=[TensorSpec(name="X", dtype="float32", shape=[None, 30])],
        outputs=[TensorSpec(name="score", dtype="float32", shape=[None])],
    )
    with pytest.raises(RegistryError, match="signature does not match"):
        registry.register("fraud", linear_onnx, card(signature=wrong))
    with pytest.raises(RegistryError, match="lists 2 features, the model reads 3"):
        registry.register("fraud", linear_onnx, card(features=["a", "b"]))
    with pytest.raises(RegistryError, match="parity check failed"):
        registry.register("fraud", linear_onnx, card(parity=Parity(max_abs_diff=0.5)))
    assert listing(registry_root) == before


def test_export_copies_artifact_card_and_plots(linear_onnx: bytes, registry_root: Path, tmp_path: Path) -> None:
    plot = tmp_path / "loss.png"
    plot.write_bytes(b"png")
    registry = Registry(registry_root)
    registry.register("m", linear_onnx, card(), plots=[plot])
    out = registry.export("m:1", tmp_path / "out")
    assert sorted(os.listdir(out)) == ["card.json", "model.onnx", "plots"]
    assert ModelCard.from_json((Path(out) / "card.json").read_text()).version == 1
    assert (Path(out) / "plots/loss.png").read_bytes() == b"png"


def test_any_fsspec_url_works(linear_onnx: bytes) -> None:
    registry = Registry("memory://streamml-test-registry")
    version = registry.register("m", linear_onnx, card())
    registry.promote("m", version.version)
    got = registry.get("m")
    assert got.model_uri.startswith("memory://") and got.model_uri.endswith("streamml-test-registry/m/1/model.onnx")
    with fsspec.open(got.model_uri, "rb") as handle:
        assert handle.read() == linear_onnx
    assert got.artifact() == linear_onnx
    fsspec.filesystem("memory").rm("/streamml-test-registry", recursive=True)


def test_concurrent_registrations_get_distinct_versions(linear_onnx: bytes, registry_root: Path) -> None:
    def register(_: int) -> int:
        return Registry(registry_root).register("m", linear_onnx, card()).version

    with ThreadPoolExecutor(max_workers=6) as pool:
        versions = list(pool.map(register, range(12)))
    assert sorted(versions) == list(range(1, 13))
    assert [v.version for v in Registry(registry_root).versions("m")] == list(range(1, 13))


def test_held_lock_times_out_and_stale_lock_is_broken(linear_onnx: bytes, registry_root: Path) -> None:
    registry = Registry(registry_root, lock_timeout_s=0.2, stale_lock_s=60)
    registry.register("m", linear_onnx, card())
    lock = registry_root / "m/.lock"
    lock.write_text(json.dumps({"host": "h", "pid": 1, "time": time.time()}))
    with pytest.raises(RegistryError, match="locked"):
        registry.register("m", linear_onnx, card())
    lock.write_text(json.dumps({"host": "h", "pid": 1, "time": time.time() - 3600}))
    assert registry.register("m", linear_onnx, card()).version == 2
    assert not lock.exists()


def test_invalid_names_and_aliases(linear_onnx: bytes, registry_root: Path) -> None:
    registry = Registry(registry_root)
    with pytest.raises(RegistryError, match="invalid model name"):
        registry.register("no/slashes", linear_onnx, card())
    registry.register("m", linear_onnx, card())
    with pytest.raises(RegistryError, match="invalid alias"):
        registry.set_alias("m", "latest", 1)
    with pytest.raises(RegistryError, match="no version 5"):
        registry.promote("m", 5)


def test_uncommitted_version_folder_is_replaced(linear_onnx: bytes, registry_root: Path) -> None:
    registry = Registry(registry_root)
    registry.register("m", linear_onnx, card())
    orphan = registry_root / "m/2"
    orphan.mkdir()
    (orphan / "model.onnx").write_bytes(b"half")  # as if a writer crashed before committing
    version = registry.register("m", linear_onnx, card())
    assert version.version == 2 and (orphan / "model.onnx").read_bytes() == linear_onnx


def test_failed_commit_leaves_nothing(linear_onnx: bytes, registry_root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    registry = Registry(registry_root)
    registry.register("m", linear_onnx, card())
    before = listing(registry_root)

    def broken_commit(manifest: object) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(registry, "_commit", broken_commit)
    with pytest.raises(RegistryError, match="disk full"):
        registry.register("m", linear_onnx, card())
    assert listing(registry_root) == before
