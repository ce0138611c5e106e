"""One benchmark worker process: ``python -m streamml.bench.child SPEC_JSON``.

Protocol on stdin/stdout, so the parent can start every worker, wait until each is set up, and start them
together: the worker prints ``READY``, waits for ``GO``, processes until it has done ``stop_after``
records (when given) or reads ``STOP``, and prints ``RESULT {json}`` with the wall time of its first input
record, the CPU seconds it spent from then on, its peak RSS, and the time its batches spent in each stage
of the loop (after ``warmup_s`` seconds of input, when given).
"""

from __future__ import annotations

import json
import logging
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

from streamml.bench.results import cpu_seconds, peak_rss_mib

log = logging.getLogger(__name__)


class Clock:
    """Marks the first input record (wall time and CPU so far) and counts records."""

    def __init__(self, warmup_s: float | None = None) -> None:
        self.first: float | None = None
        self.cpu_at_first = 0.0
        self.records = 0
        self.warmup_s = warmup_s
        #: called once, from the thread that marks, when the warm-up is over
        self.on_warm: Callable[[], None] | None = None

    def mark(self, records: int = 1) -> None:
        if self.first is None:
            self.first = time.time()
            self.cpu_at_first = cpu_seconds()
        elif self.warmup_s is not None and time.time() - self.first >= self.warmup_s:
            self.warmup_s = None
            if self.on_warm is not None:
                self.on_warm()
        self.records += records

    def result(self, **extra: Any) -> dict[str, Any]:
        return {
            "first": self.first,
            "cpu_s": cpu_seconds() - self.cpu_at_first if self.first is not None else None,
            "peak_rss_mib": peak_rss_mib(),
            "records": self.records,
            **extra,
        }


def _control(go: threading.Event, stop: threading.Event) -> None:
    """Read the parent's commands from stdin; a closed stdin means stop."""
    for line in sys.stdin:
        command = line.strip()
        if command == "GO":
            go.set()
        elif command == "STOP":
            stop.set()
    go.set()
    stop.set()


def _settings(spec: dict[str, Any]) -> Any:
    from streamml.config import load_settings

    return load_settings(**spec["settings"])


def passthrough(spec: dict[str, Any], clock: Clock, go: threading.Event, stop: threading.Event) -> dict[str, Any]:
    """Consume -> produce the same bytes, one exactly-once transaction per batch: no decode, no SQL."""
    import numpy as np

    from streamml.kafka import BatchConsumer, Producer, TransactionalProducer, client_config
    from streamml.runtime.metrics import StageTimes

    config = client_config(_settings(spec))
    times = StageTimes()

    def warm() -> None:
        nonlocal times
        times = StageTimes()

    clock.on_warm = warm
    out, limit = spec["output"], spec.get("stop_after")
    txn_id = f"{spec['group']}-{spec['worker']}"
    consumer = BatchConsumer(config, [spec["input"]], group_id=spec["group"], isolation="read_committed")
    exactly_once = spec.get("exactly_once", True)
    producer = TransactionalProducer(config, txn_id) if exactly_once else Producer(config)
    _ready(go)
    try:
        while not stop.is_set() and (limit is None or clock.records < limit):
            started = time.perf_counter()
            batch = consumer.poll_batch(spec["max_batch"], spec["max_wait_ms"] / 1000)
            if not len(batch):
                continue
            closed = time.perf_counter()
            times.add("poll", (closed - started) * 1000)
            times.add("queued", max(0.0, time.time() * 1000 - float(np.min(batch.timestamps))))
            clock.mark(len(batch))
            if isinstance(producer, TransactionalProducer):
                with producer.transaction(consumer, batch.next_offsets()):
                    with times.time("produce"):
                        producer.produce_batch(out, batch.values, batch.keys)
                    produced = time.perf_counter()
            else:
                with times.time("produce"):
                    producer.produce_batch(out, batch.values, batch.keys)
                produced = time.perf_counter()
                producer.flush()
                consumer.commit(batch.next_offsets())
            done = time.perf_counter()
            times.add("commit", (done - produced) * 1000)
            times.add("batch", (done - closed) * 1000)
    finally:
        producer.close()
        consumer.close()
    return clock.result(stages=times.snapshot())


def per_message(spec: dict[str, Any], clock: Clock, go: threading.Event, stop: threading.Event) -> dict[str, Any]:
    """The reference demos' loop: poll one, json.loads, predict one, produce one, commit synchronously."""
    import numpy as np
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    session = ort.InferenceSession(spec["model_path"], sess_options=options)
    input_name = session.get_inputs()[0].name

    def score(x: np.ndarray) -> float:
        return float(session.run(None, {input_name: x})[0][0])

    return _one_by_one(spec, clock, go, stop, score)


def per_message_remote(
    spec: dict[str, Any], clock: Clock, go: threading.Event, stop: threading.Event
) -> dict[str, Any]:
    """The Kafka Streams + TF Serving demos' loop: per message a new gRPC channel and one blocking call."""
    import grpc
    import numpy as np
    from tritonclient.grpc import service_pb2 as pb

    method = "/inference.GRPCInferenceService/ModelInfer"

    def score(x: np.ndarray) -> float:
        request = pb.ModelInferRequest(model_name=spec["remote_model"])
        request.inputs.add(name=spec["input_name"], datatype="FP32", shape=list(x.shape))
        request.raw_input_contents.append(x.astype("<f4").tobytes())
        with grpc.insecure_channel(spec["server"]) as channel:
            call = channel.unary_unary(method, pb.ModelInferRequest.SerializeToString, pb.ModelInferResponse.FromString)
            reply = call(request)
        return float(np.frombuffer(reply.raw_output_contents[0], dtype="<f4")[0])

    return _one_by_one(spec, clock, go, stop, score)


def _one_by_one(
    spec: dict[str, Any], clock: Clock, go: threading.Event, stop: threading.Event, score: Callable[[Any], float]
) -> dict[str, Any]:
    """Poll one record, parse it, ``score`` its features, produce one, commit synchronously; repeat."""
    import numpy as np
    from confluent_kafka import Consumer, Producer

    from streamml.bench.data import FEATURES
    from streamml.kafka import client_config

    config = client_config(_settings(spec))
    consumer = Consumer(
        {**config, "group.id": spec["group"], "enable.auto.commit": False, "auto.offset.reset": "earliest"}
    )
    consumer.subscribe([spec["input"]])
    producer = Producer(config)
    out, limit = spec["output"], spec.get("stop_after")
    _ready(go)
    try:
        while not stop.is_set() and (limit is None or clock.records < limit):
            msg = consumer.poll(0.1)
            if msg is None or msg.error() is not None:
                continue
            clock.mark()
            row = json.loads(msg.value() or b"null")
            value = score(np.array([[row[f] for f in FEATURES]], dtype=np.float32))
            producer.produce(out, json.dumps({"Id": row["Id"], "score": value}).encode(), msg.key())
            producer.poll(0)
            consumer.commit(message=msg, asynchronous=False)
    finally:
        producer.flush(30)
        consumer.close()
    return clock.result()


def runner(spec: dict[str, Any], clock: Clock, go: threading.Event, stop: threading.Event) -> dict[str, Any]:
    """streamml's Runner running the given persistent queries in this process."""
    from streamml.kafka import BatchConsumer
    from streamml.runtime.options import Guarantee, RuntimeOptions
    from streamml.runtime.runner import Runner

    options = RuntimeOptions(
        max_batch=spec["max_batch"],
        max_wait_ms=spec["max_wait_ms"],
        guarantee=Guarantee.EXACTLY_ONCE if spec.get("exactly_once", True) else Guarantee.AT_LEAST_ONCE,
    )
    from streamml.runtime.metrics import StageTimes

    _mark_input_batches(BatchConsumer, spec["input"], clock)
    run = Runner(_settings(spec), options, only=spec["queries"], refresh_s=0.5)
    queries = []

    def warm() -> None:  # on the query's own thread (it marks the clock), so no batch is half counted
        for metrics in run.status():
            metrics.stages = StageTimes()

    def shutdown(*args: Any, **kwargs: Any) -> None:
        queries.extend(run.status())  # the runner forgets its queries when it shuts down
        stop_all(*args, **kwargs)

    clock.on_warm = warm
    stop_all, run.shutdown = run.shutdown, shutdown  # type: ignore[method-assign]
    _ready(go)
    run.run(stop)
    return clock.result(stages=queries[0].stages.snapshot() if len(queries) == 1 else {})


def _mark_input_batches(cls: Any, topic: str, clock: Clock) -> None:
    """Make every non-empty batch of ``topic`` mark the clock (this process only runs the benchmark)."""
    poll_batch = cls.poll_batch

    def marking(self: Any, *args: Any, **kwargs: Any) -> Any:
        batch = poll_batch(self, *args, **kwargs)
        if len(batch) and batch.topics[0] == topic:
            clock.mark(len(batch))
        return batch

    cls.poll_batch = marking


def _ready(go: threading.Event) -> None:
    sys.stdout.write("READY\n")
    sys.stdout.flush()
    go.wait()


KINDS: dict[str, Callable[[dict[str, Any], Clock, threading.Event, threading.Event], dict[str, Any]]] = {
    "passthrough": passthrough,
    "per_message": per_message,
    "per_message_remote": per_message_remote,
    "runner": runner,
}


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    spec = json.loads(args[0])
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    go, stop = threading.Event(), threading.Event()
    threading.Thread(target=_control, args=(go, stop), daemon=True).start()
    try:
        result = KINDS[spec["kind"]](spec, Clock(spec.get("warmup_s")), go, stop)
    except Exception as exc:  # reported to the parent, which marks the scenario FAILED
        log.exception("benchmark worker failed")
        result = {"error": f"{type(exc).__name__}: {exc}"}
    sys.stdout.write("RESULT " + json.dumps(result) + "\n")
    sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
