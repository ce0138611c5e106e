from __future__ import annotations

import json
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

pytestmark = pytest.mark.broker
Cli = Callable[..., subprocess.CompletedProcess[str]]


def test_topic_lifecycle(cli: Cli, unique: Callable[[str], str]) -> None:
    name = unique("cli")
    assert "created topic" in cli("topic", "create", name, "-p", "2", "-c", "cleanup.policy=compact").stdout
    assert name in cli("topic", "list").stdout.split()
    described = cli("topic", "describe", name).stdout
    assert "partitions=2" in described and "cleanup.policy=compact" in described
    assert "already exists" in cli("topic", "create", name, "--if-not-exists").stdout
    cli("topic", "delete", name)
    assert name not in cli("topic", "list").stdout.split()


def test_produce_json_with_key_then_consume_with_meta(cli: Cli, topic: Callable[..., str]) -> None:
    name = topic(partitions=2)
    lines = [json.dumps({"id": i, "user": f"u{i % 3}", "amount": i / 4}) for i in range(100)]
    cli("produce", name, "--key", "user", input="\n".join(lines) + "\n")
    out = cli("consume", name, "--meta", "-o", "jsonl").stdout.splitlines()
    rows = [json.loads(line) for line in out]
    assert sorted(r["id"] for r in rows) == list(range(100))
    assert all(r["_key"] == r["user"] for r in rows)
    assert {r["_partition"] for r in rows} <= {0, 1}


def test_consume_limit_offset_and_time(cli: Cli, topic: Callable[..., str]) -> None:
    name = topic()
    cli("produce", name, input="".join(json.dumps({"n": i}) + "\n" for i in range(20)))
    assert [json.loads(x)["n"] for x in cli("consume", name, "--offset", "15", "-o", "jsonl").stdout.splitlines()] == [
        15, 16, 17, 18, 19,
    ]  # fmt: skip
    assert len(cli("consume", name, "--limit", "7", "-o", "jsonl").stdout.splitlines()) == 7
    assert cli("consume", name, "--from-time", "2999-01-01T00:00:00Z", "-o", "jsonl").stdout.strip() == ""


def test_produce_csv_file_with_header_and_key(cli: Cli, topic: Callable[..., str], tmp_path: Path) -> None:
    name = topic()
    csv = tmp_path / "data.csv"
    csv.write_text('Id,User,Amount\n1,anna,3.5\n2,bert,\n3,"carl, jr",9\n')
    cli("produce", name, "--format", "delimited", "--file", str(csv), "--header", "--key", "Id")
    rows = [json.loads(x) for x in cli("consume", name, "--format", "raw", "--meta", "-o", "jsonl").stdout.splitlines()]
    assert [r["_key"] for r in rows] == ["1", "2", "3"]
    assert rows[2]["value"] == '3,"carl, jr",9'


def test_produce_rate_limit_and_loop(cli: Cli, topic: Callable[..., str], tmp_path: Path) -> None:
    name = topic()
    data = tmp_path / "d.jsonl"
    data.write_text("".join(json.dumps({"i": i}) + "\n" for i in range(10)))
    proc = cli("produce", name, "--file", str(data), "--loop", "--limit", "35", "--rate", "1000")
    assert "produced 35 records" in proc.stderr
    assert len(cli("consume", name, "-o", "jsonl").stdout.splitlines()) == 35


def test_malformed_input_names_the_line(cli: Cli, topic: Callable[..., str]) -> None:
    name = topic()
    proc = cli("produce", name, input='{"a": 1}\n{"a": 2}\n{"a": \n', check=False)
    assert proc.returncode == 2
    assert "line 3: invalid JSON" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1


def test_unknown_topic_is_one_line(cli: Cli, unique: Callable[[str], str]) -> None:
    name = unique("missing")
    for args in (("produce", name), ("consume", name), ("topic", "describe", name)):
        proc = cli(*args, input="{}\n", check=False)
        assert proc.returncode == 4, proc.stderr
        assert f"topic '{name}' does not exist" in proc.stderr
        assert "Traceback" not in proc.stderr


def test_unreachable_cluster_and_bad_config(cli: Cli) -> None:
    proc = cli("topic", "list", env={"STREAMML_BOOTSTRAP": "127.0.0.1:1", "STREAMML_REQUEST_TIMEOUT_S": "1"},
               check=False)  # fmt: skip
    assert proc.returncode == 4
    assert "cannot reach Kafka at 127.0.0.1:1" in proc.stderr and "Traceback" not in proc.stderr
    proc = cli("topic", "list", env={"STREAMML_REQUEST_TIMEOUT_S": "soon"}, check=False)
    assert proc.returncode == 2
    assert "invalid setting 'request_timeout_s'" in proc.stderr


def test_debug_shows_the_traceback(cli: Cli, unique: Callable[[str], str]) -> None:
    proc = cli("--debug", "topic", "describe", unique("missing"), check=False)
    assert proc.returncode == 4
    assert "Traceback" in proc.stderr


def test_consume_reads_past_one_batch_to_the_end(cli: Cli, topic: Callable[..., str], kafka_config: dict) -> None:
    from streamml.kafka import Producer

    name = topic(partitions=2)
    with Producer(kafka_config) as producer:
        producer.produce_batch(name, [b'{"i": %d}' % i for i in range(25_000)])
    out = cli("consume", name, "-o", "jsonl", timeout=60).stdout.splitlines()
    assert len(out) == 25_000
