"""The console tools' conventions: ``consume --from-beginning`` and ``produce --create``, against the broker."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable

import pytest

from streamml.kafka import Admin

pytestmark = pytest.mark.broker

Cli = Callable[..., subprocess.CompletedProcess[str]]


def test_consume_from_beginning(cli: Cli, topic: Callable[..., str]) -> None:
    name = topic()
    cli("produce", name, input="".join(json.dumps({"n": i}) + "\n" for i in range(5)))
    proc = cli("consume", name, "--from-beginning", "--output", "jsonl")
    assert [json.loads(line)["n"] for line in proc.stdout.splitlines()] == [0, 1, 2, 3, 4]
    both = cli("consume", name, "--from-beginning", "--latest", check=False)
    assert both.returncode != 0 and len(both.stderr.strip().splitlines()) == 1


def test_produce_to_a_missing_topic_offers_create(cli: Cli, admin: Admin, unique: Callable[[str], str]) -> None:
    name = unique("new")
    refused = cli("produce", name, input='{"a": 1}\n', check=False)
    assert refused.returncode != 0 and "--create" in refused.stderr
    assert len(refused.stderr.strip().splitlines()) == 1
    cli("produce", name, "--create", "--partitions", "3", input='{"a": 1}\n{"a": 2}\n')
    assert len(admin.describe_topic(name, with_offsets=False).partitions) == 3
    proc = cli("consume", name, "--output", "jsonl")
    assert sorted(json.loads(line)["a"] for line in proc.stdout.splitlines()) == [1, 2]
