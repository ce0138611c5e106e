"""Interoperability with kcat, a Kafka client no one here wrote."""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

pytestmark = [pytest.mark.broker, pytest.mark.skipif(shutil.which("kcat") is None, reason="kcat not installed")]
Cli = Callable[..., subprocess.CompletedProcess[str]]


def kcat(*args: str, input: bytes | None = None) -> bytes:
    return subprocess.run(["kcat", *args], input=input, capture_output=True, check=True, timeout=60).stdout


def test_kcat_produces_json_streamml_consumes(cli: Cli, bootstrap: str, topic: Callable[..., str]) -> None:
    name = topic()
    records = [{"id": i, "name": f"naïve 😀 {i}", "score": i * 1.5} for i in range(50)]
    kcat(
        "-P",
        "-b",
        bootstrap,
        "-t",
        name,
        "-K",
        ":",
        input="".join(f"k{r['id']}:{json.dumps(r)}\n" for r in records).encode(),
    )
    rows = [json.loads(x) for x in cli("consume", name, "--meta", "-o", "jsonl").stdout.splitlines()]
    assert [{k: r[k] for k in ("id", "name", "score")} for r in rows] == records
    assert [r["_key"] for r in rows] == [f"k{i}" for i in range(50)]


def test_streamml_produces_json_kcat_consumes(cli: Cli, bootstrap: str, topic: Callable[..., str]) -> None:
    name = topic()
    records = [{"id": i, "city": "Zürich"} for i in range(30)]
    cli("produce", name, "--key", "id", input="".join(json.dumps(r) + "\n" for r in records))
    out = kcat("-C", "-b", bootstrap, "-t", name, "-o", "beginning", "-e", "-q", "-f", "%k\t%s\n").decode()
    pairs = [line.split("\t", 1) for line in out.splitlines()]
    assert [int(k) for k, _ in pairs] == list(range(30))
    assert [json.loads(v) for _, v in pairs] == records


def test_avro_both_ways(cli: Cli, bootstrap: str, topic: Callable[..., str], tmp_path: Path) -> None:
    """Avro binary written by streamml is byte-identical to what kcat replays, and kcat's bytes decode back."""
    schema = {
        "type": "record", "name": "Payment",
        "fields": [{"name": "id", "type": "long"}, {"name": "user", "type": ["null", "string"]},
                   {"name": "amount", "type": "double"}],
    }  # fmt: skip
    avsc = tmp_path / "payment.avsc"
    avsc.write_text(json.dumps(schema))
    records = [{"id": i, "user": None if i % 4 == 0 else f"u{i}", "amount": i / 8} for i in range(20)]
    first = topic()
    cli(
        "produce",
        first,
        "--format",
        "avro",
        "--schema",
        str(avsc),
        input="".join(json.dumps(r) + "\n" for r in records),
    )
    # kcat reads the raw Avro payloads and replays them, one file per message, into a second topic
    payloads = tmp_path / "payloads"
    payloads.mkdir()
    raw = kcat("-C", "-b", bootstrap, "-t", first, "-o", "beginning", "-e", "-q", "-f", "%S:%s")
    files, pos = [], 0
    while pos < len(raw):  # "<size>:<payload>" repeated; payloads are binary
        colon = raw.index(b":", pos)
        size = int(raw[pos:colon])
        path = payloads / f"{len(files):04d}.avro"
        path.write_bytes(raw[colon + 1 : colon + 1 + size])
        files.append(str(path))
        pos = colon + 1 + size
    assert len(files) == 20
    second = topic()
    kcat("-P", "-b", bootstrap, "-t", second, *files)
    rows = [
        json.loads(x)
        for x in cli("consume", second, "--format", "avro", "--schema", str(avsc), "-o", "jsonl").stdout.splitlines()
    ]
    assert rows == records
