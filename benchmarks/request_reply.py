"""Request/reply over Kafka: ``streamml.Client`` against a ``PREDICT`` query, side by side with a client that
opens a consumer per call.

The model side is the same in both: an iris classifier scored by ``CREATE STREAM replies AS SELECT ID,
PREDICT('iris', ...) FROM requests`` in a runner of this process (exactly-once). The callers are ``--callers``
threads, each sending its requests one after the other:

- streamml: one :class:`~streamml.serve.requests.Client` shared by every caller (one producer, one reply
  consumer, replies routed by correlation id);
- per call: each request opens its own consumer on the reply topic (positioned at its end), sends, and polls
  until the reply with its correlation id comes, as a hand-written request/reply helper does.

Every request must get its own reply; latency is per request (send to reply in hand), p50/p99 over all calls.

    .venv/bin/python -m benchmarks.request_reply --requests 10000 --callers 50 --write
"""

from __future__ import annotations

import argparse
import os
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import numpy as np
import orjson

from benchmarks.cluster import bench_settings
from benchmarks.report import table, write_section
from streamml.config import Settings
from streamml.kafka import BatchConsumer, Producer, client_config
from streamml.kafka.headers import H_CORRELATION_ID, H_REPLY_TOPIC
from streamml.models.registry import Registry
from streamml.models.training import train_table
from streamml.runtime.control import publish_events
from streamml.runtime.options import RuntimeOptions
from streamml.runtime.runner import Runner
from streamml.runtime.session import Session
from streamml.serve.requests import Client

FEATURES = ["SEPAL_LENGTH", "SEPAL_WIDTH", "PETAL_LENGTH", "PETAL_WIDTH"]


def iris_rows() -> list[dict[str, float]]:
    from sklearn.datasets import load_iris

    data = load_iris().data
    return [dict(zip(FEATURES, map(float, row), strict=True)) for row in data]


def deploy(settings: Settings, requests: str, replies: str) -> None:
    import pyarrow as pa
    from sklearn.datasets import load_iris

    data = load_iris()
    table = pa.table({**{f: data.data[:, i] for i, f in enumerate(FEATURES)},
                      "species": np.asarray(data.target_names)[data.target].astype(object)})  # fmt: skip
    registry = Registry(settings.registry_root)
    version = train_table("classifier", table, "species", {"model": "logistic"}, name="iris", registry=registry)
    publish_events(settings, [registry.promote("iris", version.version)])
    Session(settings).execute(
        f"CREATE STREAM requests (ID BIGINT, {', '.join(f + ' DOUBLE' for f in FEATURES)}) "
        f"WITH (KAFKA_TOPIC='{requests}', VALUE_FORMAT='JSON', PARTITIONS=3);"
        f"CREATE STREAM replies WITH (KAFKA_TOPIC='{replies}', VALUE_FORMAT='JSON') AS "
        f"SELECT ID, PREDICT('iris', {', '.join(FEATURES)}) AS P FROM requests;"
    )


def per_call(settings: Settings, requests: str, replies: str) -> Callable[[dict[str, float]], dict]:
    """One consumer per call, the helper people write first."""
    config = client_config(settings)
    producer = Producer(config, properties={"linger.ms": 1})

    def call(record: dict[str, float]) -> dict:
        cid = os.urandom(16)
        with BatchConsumer(config, [replies], start="latest") as reader:
            producer.produce_batch(requests, [orjson.dumps(record)], None,
                                   headers=[[(H_CORRELATION_ID, cid), (H_REPLY_TOPIC, replies.encode())]])  # fmt: skip
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                batch = reader.poll_batch(10_000, 0.05)
                for headers, value in zip(batch.headers, batch.values, strict=True):
                    if dict(headers or ()).get(H_CORRELATION_ID) == cid:
                        return orjson.loads(value)  # type: ignore[no-any-return]
        raise TimeoutError("no reply")

    return call


def drive(call: Callable[[dict[str, float]], dict], requests: int, callers: int) -> tuple[float, np.ndarray]:
    """``requests`` calls from ``callers`` threads; (requests/s, per-call latencies in ms)."""
    rows = iris_rows()
    latencies = np.zeros(requests)
    errors: list[str] = []

    def caller(first: int) -> None:
        for i in range(first, requests, callers):
            started = time.perf_counter()
            reply = call({"ID": i, **rows[i % len(rows)]})
            latencies[i] = (time.perf_counter() - started) * 1000
            if reply.get("ID") != i:
                errors.append(f"request {i} got the reply {reply}")

    started = time.perf_counter()
    threads = [threading.Thread(target=caller, args=(c,)) for c in range(callers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - started
    assert not errors, errors[:3]
    return requests / elapsed, latencies


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=10_000)
    parser.add_argument("--callers", type=int, default=50)
    parser.add_argument("--per-call-requests", type=int, default=500, help="requests for the per-call client")
    parser.add_argument("--write", action="store_true", help="update docs/benchmarks.md")
    args = parser.parse_args()
    with bench_settings() as base, tempfile.TemporaryDirectory() as tmp:
        run = uuid.uuid4().hex[:8]  # topics of their own: a configured cluster may hold an earlier run's
        settings = base.model_copy(
            update={"service_id": f"bench-requests-{run}", "registry_url": str(Path(tmp) / "reg")}
        )
        requests, replies = f"bench_requests_{run}", f"bench_replies_{run}"
        deploy(settings, requests, replies)
        runner = Runner(settings, RuntimeOptions(max_wait_ms=5), refresh_s=0.5)
        stop = threading.Event()
        threading.Thread(target=runner.run, args=(stop,), daemon=True).start()
        try:
            with Client(settings) as client:
                client.predict(requests, {"ID": -1, **iris_rows()[0]}, reply=replies, timeout=120)
                call = lambda r: client.predict(requests, r, reply=replies, timeout=60)  # noqa: E731
                ours = drive(call, args.requests, args.callers)
            theirs = drive(per_call(settings, requests, replies), args.per_call_requests, args.callers)
        finally:
            stop.set()
    rows = []
    for name, n, (rate, lat) in (("streamml Client (one reply consumer)", args.requests, ours),
                                 ("a consumer per call", args.per_call_requests, theirs)):  # fmt: skip
        rows.append([name, n, args.callers, rate, float(np.percentile(lat, 50)), float(np.percentile(lat, 99)),
                     f"{rate / theirs[0]:.1f}x"])  # fmt: skip
    body = table(["client", "requests", "callers", "requests/s", "p50 ms", "p99 ms", "vs per call"], rows)
    body += ("\n\nThe model side: a `PREDICT` query over the request topic (3 partitions), exactly-once, in a runner "
             "of the same process (`max_wait_ms=5`); every request got its own reply.")  # fmt: skip
    print(body)
    if args.write:
        command = (f"python -m benchmarks.request_reply --requests {args.requests} --callers {args.callers} "
                   f"--per-call-requests {args.per_call_requests} --write")  # fmt: skip
        write_section("request-reply", "Request/reply over Kafka", body, command)


if __name__ == "__main__":
    main()
