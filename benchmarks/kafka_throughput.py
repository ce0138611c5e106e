"""Produce and consume throughput of streamml's batched clients against kcat, side by side in one run.

1 KB JSON records, one partition, the local broker (or STREAMML_BOOTSTRAP). Each side runs ``--rounds``
times, alternating, and the medians are compared:

    .venv/bin/python -m benchmarks.kafka_throughput --records 300000 --rounds 3
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import tempfile
import time
import uuid
from functools import partial
from pathlib import Path

import orjson
from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

from benchmarks.report import median, table, write_section
from streamml.config import load_settings
from streamml.kafka import Admin, BatchConsumer, LocalBroker, Producer, client_config


def make_records(n: int, size: int = 1000) -> list[bytes]:
    """``n`` JSON objects of about ``size`` bytes each."""
    filler = "x" * (size - 120)
    return [orjson.dumps({"id": i, "user": f"user{i % 997}", "amount": i * 0.37, "note": filler}) for i in range(n)]


def timed(fn: object) -> float:
    start = time.perf_counter()
    fn()  # type: ignore[operator]
    return time.perf_counter() - start


def streamml_produce(config: dict, topic: str, values: list[bytes]) -> None:
    with Producer(config) as producer:
        producer.produce_batch(topic, values)


def streamml_consume(config: dict, topic: str, n: int) -> None:
    seen = 0
    with BatchConsumer(config, [topic], isolation="read_uncommitted") as consumer:
        while seen < n:
            seen += len(consumer.poll_batch(20_000, 1.0).values)


def raw_consume(config: dict, topic: str, n: int) -> None:
    """The client alone: confluent-kafka's batch consume with nothing else done."""
    consumer = Consumer({"bootstrap.servers": config["bootstrap.servers"], "group.id": uuid.uuid4().hex})
    consumer.assign([TopicPartition(topic, 0, OFFSET_BEGINNING)])
    seen = 0
    while seen < n:
        seen += len(consumer.consume(20_000, 1.0))
    consumer.close()


def kcat_produce(bootstrap: str, topic: str, path: Path) -> None:
    subprocess.run(["kcat", "-P", "-b", bootstrap, "-t", topic, "-l", str(path)], check=True)


def kcat_consume(bootstrap: str, topic: str, n: int) -> None:
    cmd = ["kcat", "-C", "-b", bootstrap, "-t", topic, "-o", "beginning", "-c", str(n), "-q"]
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--records", type=int, default=300_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--no-write", action="store_true", help="Print only; leave docs/benchmarks.md alone.")
    args = parser.parse_args()
    if shutil.which("kcat") is None:
        raise SystemExit("kcat is not installed (scripts/setup.sh installs it)")

    settings = load_settings()
    if not settings.bootstrap:
        LocalBroker(settings).start()
    config = client_config(settings)
    bootstrap = str(config["bootstrap.servers"])
    admin = Admin(config)
    values = make_records(args.records)
    n = len(values)
    names = ("kcat produce", "streamml produce", "kcat consume", "streamml consume", "raw consume")
    results: dict[str, list[float]] = {k: [] for k in names}
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "records.jsonl"
        path.write_bytes(b"\n".join(values) + b"\n")
        topics = []
        for _ in range(args.rounds):
            t_kcat, t_ours = f"bench-kcat-{uuid.uuid4().hex[:6]}", f"bench-streamml-{uuid.uuid4().hex[:6]}"
            topics += [t_kcat, t_ours]
            admin.create_topic(t_kcat)
            admin.create_topic(t_ours)
            results["kcat produce"].append(n / timed(partial(kcat_produce, bootstrap, t_kcat, path)))
            results["streamml produce"].append(n / timed(partial(streamml_produce, config, t_ours, values)))
            results["kcat consume"].append(n / timed(partial(kcat_consume, bootstrap, t_kcat, n)))
            results["streamml consume"].append(n / timed(partial(streamml_consume, config, t_ours, n)))
            results["raw consume"].append(n / timed(partial(raw_consume, config, t_ours, n)))
        for t in topics:
            admin.delete_topic(t, if_exists=True)

    rows = []
    for op in ("produce", "consume"):
        ours, theirs = median(results[f"streamml {op}"]), median(results[f"kcat {op}"])
        rows.append([op, ours, theirs, f"{ours / theirs:.0%}", "≥ 70%", "yes" if ours >= 0.7 * theirs else "NO"])
    body = table(["operation", "streamml records/s", "kcat records/s", "ratio", "target", "met"], rows)
    body += (
        f"\n\n{n:,} JSON records of ~1 KB, one partition, median of {args.rounds} alternating rounds; "
        "streamml uses `Producer.produce_batch` (idempotent, acks=all) and `BatchConsumer.poll_batch` "
        "(20k records per call, values materialised); kcat runs `-P -l FILE` and `-C -o beginning -c N`.\n\n"
        f"Ceiling of the Python client: confluent-kafka's own `Consumer.consume(20000)` loop, with nothing "
        f"else done, reached {median(results['raw consume']):,.0f} records/s in the same run "
        f"({median(results['raw consume']) / median(results['kcat consume']):.0%} of kcat): it builds one Python "
        "object per message, so consume cannot reach 70% of kcat through it. Produce batches are capped at "
        "1 MB by the broker's default `message.max.bytes`."
    )
    print(body)
    if not args.no_write:
        write_section(
            "kafka-throughput",
            "Kafka produce / consume vs kcat",
            body,
            f"python -m benchmarks.kafka_throughput --records {args.records} --rounds {args.rounds}",
        )


if __name__ == "__main__":
    main()
