"""The scenarios: each runs its workers as separate processes on the same input and checks its output.

Throughput is timed from the first input record any worker received to the moment the scenario's consumer
group has committed the whole input (under exactly-once, the moment the output becomes readable). Every
output is then read back ``read_committed`` and checked; an incomplete one makes the run FAILED.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import logging
import os
import queue
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from confluent_kafka import Consumer, TopicPartition

from streamml.bench import data
from streamml.bench.results import ScenarioResult, percentile
from streamml.config import Settings
from streamml.kafka import Admin, BatchConsumer, Producer

log = logging.getLogger(__name__)

ARGS = ", ".join(data.FEATURES)
QUIX_PYTHON_ENV = "STREAMML_BENCH_QUIX_PYTHON"


@dataclass
class Bench:
    """What every scenario shares: the cluster, the model, the batch knobs, a folder for worker logs."""

    settings: Settings
    model: data.ModelFiles
    workdir: Path
    max_batch: int = 10_000
    max_wait_ms: int = 100
    quix_python: str | None = None
    timeout_s: float = 300.0
    config: dict[str, Any] = field(init=False)
    admin: Admin = field(init=False)

    def __post_init__(self) -> None:
        from streamml.kafka import client_config

        self.config = client_config(self.settings)
        self.admin = Admin(self.config, timeout_s=self.settings.request_timeout_s)

    def name(self, prefix: str) -> str:
        return f"bench-{prefix}-{uuid.uuid4().hex[:8]}"

    def settings_overrides(self, service_id: str, worker: str) -> dict[str, Any]:
        """What a worker process needs on top of its environment to reach the same cluster and registry."""
        return {
            "bootstrap": self.settings.bootstrap,
            "home": str(self.settings.home),
            "kafka_properties": dict(self.settings.kafka_properties),
            "service_id": service_id,
            "worker_id": worker,
            "registry_url": self.model.registry_url,
        }

    def drop_topics(self, *fragments: str) -> None:
        """Delete the topics whose names contain any of ``fragments`` (a scenario's outputs and internals)."""
        for topic in self.admin.topic_names(include_internal=True):
            if any(f in topic for f in fragments):
                with contextlib.suppress(Exception):
                    self.admin.delete_topic(topic, if_exists=True)


def find_quix_python(explicit: str | None = None, settings: Settings | None = None) -> str | None:
    """An interpreter with ``quixstreams``: the given one, ``$STREAMML_BENCH_QUIX_PYTHON``, this one, or the
    virtual environment ``<cache_dir>/quix-venv`` (Quix Streams pins older confluent-kafka and pydantic
    releases than streamml, so it usually lives in an environment of its own)."""
    for candidate in (explicit, os.environ.get(QUIX_PYTHON_ENV)):
        if candidate:
            return candidate
    if importlib.util.find_spec("quixstreams") is not None:
        return sys.executable
    if settings is not None:
        venv = settings.cache_dir / "quix-venv" / "bin" / "python"
        if venv.exists():
            return str(venv)
    return None


# -- worker processes ------------------------------------------------------------------------------------
class Worker:
    """A worker process speaking the READY / GO / STOP / RESULT protocol of :mod:`streamml.bench.child`."""

    def __init__(self, argv: list[str], log_path: Path) -> None:
        self.log_path = log_path
        self._log: IO[bytes] = open(log_path, "wb")  # noqa: SIM115 - closed in close()
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        self.proc = subprocess.Popen(
            argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self._log, text=True, env=env
        )
        self._lines: queue.Queue[str | None] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()
        self.result: dict[str, Any] | None = None

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self._lines.put(line.strip())
        self._lines.put(None)

    def _next(self, timeout_s: float) -> str:
        try:
            line = self._lines.get(timeout=timeout_s)
        except queue.Empty:
            raise TimeoutError(f"worker silent for {timeout_s:.0f} s; log: {self.log_path}") from None
        if line is None:
            raise RuntimeError(f"worker exited ({self.proc.wait()}): {self.tail()}")
        if line.startswith("RESULT "):
            self.result = json.loads(line[7:])
        return line

    def wait_ready(self, timeout_s: float = 120.0) -> None:
        deadline = time.monotonic() + timeout_s
        while (line := self._next(max(0.1, deadline - time.monotonic()))) != "READY":
            if self.result is not None:
                raise RuntimeError(self.result.get("error") or f"worker stopped before it was ready: {line}")

    def send(self, command: str) -> None:
        with contextlib.suppress(BrokenPipeError, OSError):
            assert self.proc.stdin is not None
            self.proc.stdin.write(command + "\n")
            self.proc.stdin.flush()

    def finished(self) -> bool:
        """True once the worker has reported its result (it may stop by itself after ``stop_after``)."""
        while self.result is None:
            try:
                line = self._lines.get_nowait()
            except queue.Empty:
                return False
            if line is None:
                return True
            if line.startswith("RESULT "):
                self.result = json.loads(line[7:])
        return True

    def collect(self, timeout_s: float = 90.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout_s
        while self.result is None:
            self._next(max(0.1, deadline - time.monotonic()))
        self.proc.wait(timeout=max(1.0, deadline - time.monotonic()))
        return self.result

    def tail(self, chars: int = 600) -> str:
        self._log.flush()
        text = self.log_path.read_text(errors="replace").strip()
        return text[-chars:] if text else "(no output)"

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        self._log.close()


def child_argv(spec: dict[str, Any]) -> list[str]:
    return [sys.executable, "-m", "streamml.bench.child", json.dumps(spec)]


def quix_argv(python: str, spec: dict[str, Any]) -> list[str]:
    return [python, str(Path(__file__).with_name("quix_app.py")), json.dumps(spec)]


def committed_total(consumer: Consumer, topic: str, partitions: list[int]) -> int:
    """Sum of the committed offsets of ``consumer``'s group on ``topic`` (0 where none)."""
    tps = consumer.committed([TopicPartition(topic, p) for p in partitions], timeout=10)
    return sum(max(tp.offset, 0) for tp in tps)


def run_workers(
    bench: Bench,
    name: str,
    argvs: list[list[str]],
    *,
    group: str,
    source: str,
    output: str,
    records: int,
    check: Callable[[list[tuple[bytes | None, bytes | None]]], str | None],
) -> ScenarioResult:
    """Start the workers, start them together, time them over ``source``, stop them, check ``output``."""
    result = ScenarioResult(name, records)
    marks = bench.admin.watermarks(source)
    partitions, end = sorted(marks), sum(high for _, high in marks.values())
    workers = [Worker(argv, bench.workdir / f"{name}.{i}.log") for i, argv in enumerate(argvs)]
    watcher = Consumer({**bench.config, "group.id": group, "enable.auto.commit": False})
    try:
        for worker in workers:
            worker.wait_ready()
        for worker in workers:
            worker.send("GO")
        deadline = time.monotonic() + bench.timeout_s
        done_at = None
        while done_at is None:
            if committed_total(watcher, source, partitions) >= end:
                done_at = time.time()
            elif time.monotonic() > deadline:
                raise TimeoutError(f"{name} did not consume its input in {bench.timeout_s:.0f} s")
            elif any(w.finished() and w.result and w.result.get("error") for w in workers):
                break
            else:
                time.sleep(0.02)
        for worker in workers:
            worker.send("STOP")
        reports = [w.collect() for w in workers]
        errors = [r["error"] for r in reports if r.get("error")]
        if errors:
            result.error = errors[0]
            return result
        assert done_at is not None
        firsts = [r["first"] for r in reports if r.get("first") is not None]
        result.seconds = done_at - min(firsts)
        result.cpu_s = sum(r["cpu_s"] or 0.0 for r in reports)
        result.peak_rss_mib = max(r["peak_rss_mib"] for r in reports)
        if "version" in reports[0]:
            result.notes["version"] = str(reports[0]["version"])
        result.error = check(data.read_topic(bench.config, output))
    except Exception as exc:  # any failure of a scenario is reported, never raised past the suite
        tails = "; ".join(w.tail(300) for w in workers)
        result.error = f"{type(exc).__name__}: {exc}" + (f" [worker log: {tails}]" if tails else "")
    finally:
        watcher.close()
        for worker in workers:
            worker.close()
    return result


def ids_check(expected: range | list[int]) -> Callable[[list[tuple[bytes | None, bytes | None]]], str | None]:
    return lambda rows: data.check_ids(data.output_ids(v for _, v in rows), expected)


# -- the scenarios ---------------------------------------------------------------------------------------
def passthrough(bench: Bench, source: str, records: int, name: str = "passthrough") -> ScenarioResult:
    """(a) consume -> produce the same JSON bytes, one exactly-once transaction per batch."""
    group, output = bench.name("pass"), bench.name("pass-out")
    bench.admin.create_topic(output, partitions=data.PARTITIONS)
    spec = {
        "kind": "passthrough",
        "settings": bench.settings_overrides(group, "w0"),
        "group": group,
        "worker": "w0",
        "input": source,
        "output": output,
        "max_batch": bench.max_batch,
        "max_wait_ms": bench.max_wait_ms,
    }
    try:
        return run_workers(
            bench,
            name,
            [child_argv(spec)],
            group=group,
            source=source,
            output=output,
            records=records,
            check=ids_check(range(records)),
        )
    finally:
        bench.drop_topics(output)


def register(bench: Bench, service: str, sql: str) -> list[str]:
    """Register ``sql`` in the catalog of deployment ``service``; returns the persistent query ids."""
    from streamml.runtime.session import Session

    settings = bench.settings.model_copy(update={"service_id": service, "registry_url": bench.model.registry_url})
    ids = [o.result.query_id for o in Session(settings).execute(sql) if o.result.query_id]
    return [i for i in ids if i is not None]


def run_sql(
    bench: Bench,
    name: str,
    source: str,
    records: int,
    select: str,
    check: Callable[[list[tuple[bytes | None, bytes | None]]], str | None],
    *,
    workers: int = 1,
    exactly_once: bool = True,
) -> ScenarioResult:
    """Run ``CREATE ... WITH (KAFKA_TOPIC=out) AS {select}`` over the input stream ``tx`` in streamml workers."""
    from streamml.runtime.naming import group_id

    service, output = bench.name("svc"), bench.name("out")
    sql = f"CREATE STREAM tx ({data.COLUMNS}) WITH (KAFKA_TOPIC='{source}', VALUE_FORMAT='JSON');\n" + select.format(
        output=output
    )
    try:
        queries = register(bench, service, sql)
        specs = [
            {
                "kind": "runner",
                "settings": bench.settings_overrides(service, f"w{i}"),
                "queries": queries,
                "input": source,
                "max_batch": bench.max_batch,
                "max_wait_ms": bench.max_wait_ms,
                "exactly_once": exactly_once,
            }
            for i in range(workers)
        ]
        return run_workers(
            bench,
            name,
            [child_argv(s) for s in specs],
            group=group_id(service, queries[0]),
            source=source,
            output=output,
            records=records,
            check=check,
        )
    except Exception as exc:
        return ScenarioResult(name, records, error=f"{type(exc).__name__}: {exc}")
    finally:
        bench.drop_topics(output, service)


def scoring_sql(model: str = "fraud") -> str:
    """The scoring query over ``tx`` with ``{output}`` left to fill in."""
    return (
        f"CREATE STREAM scored WITH (KAFKA_TOPIC='{{output}}') AS SELECT Id, PREDICT('{model}', {ARGS}) AS p FROM tx;"
    )


FILTER = "Amount >= 1.0"
STATELESS = "CREATE STREAM filtered WITH (KAFKA_TOPIC='{output}') AS SELECT Id, " + ARGS + f" FROM tx WHERE {FILTER};"
TUMBLING = (
    "CREATE TABLE counts WITH (KAFKA_TOPIC='{output}') AS SELECT User, COUNT(*) AS n FROM tx "
    "WINDOW TUMBLING (SIZE 1 MINUTE) GROUP BY User;"
)


def streamml_scoring(bench: Bench, source: str, records: int, workers: int = 1, model: str = "fraud") -> ScenarioResult:
    """(b) PREDICT in a persistent query, exactly-once, in ``workers`` processes."""
    name = f"streamml ({workers} worker{'s' if workers > 1 else ''})"
    return run_sql(bench, name, source, records, scoring_sql(model), ids_check(range(records)), workers=workers)


def stateless(bench: Bench, source: str, table: pa.Table, exactly_once: bool = True) -> ScenarioResult:
    """Filter + projection of 30 doubles, JSON -> JSON."""
    keep = table.filter(pc.greater_equal(table.column("Amount"), 1.0)).column("Id").to_pylist()
    name = f"SQL stateless ({'exactly-once' if exactly_once else 'at-least-once'})"
    return run_sql(bench, name, source, table.num_rows, STATELESS, ids_check(keep), exactly_once=exactly_once)


def tumbling(bench: Bench, source: str, records: int) -> ScenarioResult:
    """COUNT(*) per user (10,000 keys) in 1-minute tumbling windows, exactly-once."""
    return run_sql(
        bench, "SQL tumbling count", source, records, TUMBLING, lambda rows: data.check_counts(rows, records)
    )


def per_message(
    bench: Bench, source: str, records: int, server: str | None = None, input_name: str = ""
) -> ScenarioResult:
    """(c) the reference demos' loop over a bounded input; records/s extrapolates. With ``server`` (a gRPC
    address), each message is scored by one blocking call to the model server on a new channel, as the
    Kafka Streams + TF Serving demos did."""
    group, output = bench.name("loop"), bench.name("loop-out")
    bench.admin.create_topic(output, partitions=data.PARTITIONS)
    spec = {
        "kind": "per_message" if server is None else "per_message_remote",
        "server": server,
        "input_name": input_name,
        "remote_model": "fraud",
        "settings": bench.settings_overrides(group, "w0"),
        "group": group,
        "input": source,
        "output": output,
        "model_path": str(bench.model.onnx_path),
        "stop_after": records,
    }
    try:
        return run_workers(
            bench,
            "per-message loop" if server is None else "per-message blocking call",
            [child_argv(spec)],
            group=group,
            source=source,
            output=output,
            records=records,
            check=ids_check(range(records)),
        )
    finally:
        bench.drop_topics(output)


def quix(bench: Bench, source: str, records: int) -> ScenarioResult:
    """(d) the same scoring as a Quix Streams application, exactly-once."""
    name = "Quix Streams"
    if bench.quix_python is None:
        return ScenarioResult(
            name, records, error=f"quixstreams is not installed (set {QUIX_PYTHON_ENV})", skipped=True
        )
    group, output = bench.name("quix"), bench.name("quix-out")
    bench.admin.create_topic(output, partitions=data.PARTITIONS)
    spec = {
        "bootstrap": bench.settings.bootstrap,
        "group": group,
        "input": source,
        "output": output,
        "model_path": str(bench.model.onnx_path),
        "stop_after": records,
        "exactly_once": True,
    }
    try:
        return run_workers(
            bench,
            name,
            [quix_argv(bench.quix_python, spec)],
            group=group,
            source=source,
            output=output,
            records=records,
            check=ids_check(range(records)),
        )
    finally:
        bench.drop_topics(output, group)


def model_only(bench: Bench, table: pa.Table) -> ScenarioResult:
    """(e) ONNX Runtime on in-memory arrays, batches of ``max_batch``, one intra-op thread."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    session = ort.InferenceSession(str(bench.model.onnx_path), sess_options=options)
    name = session.get_inputs()[0].name
    x = data.features(table)
    start_cpu, start = time.process_time(), time.perf_counter()
    for i in range(0, len(x), bench.max_batch):
        session.run(None, {name: x[i : i + bench.max_batch]})
    seconds = time.perf_counter() - start
    return ScenarioResult("model alone (ONNX Runtime)", len(x), seconds, cpu_s=time.process_time() - start_cpu)


# -- latency ---------------------------------------------------------------------------------------------
def latency(
    bench: Bench,
    rate: int,
    seconds: float,
    *,
    passthrough: bool = False,
    exactly_once: bool = True,
    max_wait_ms: int = 10,
    warmup_s: float = 1.0,
    model: str = "fraud",
) -> ScenarioResult:
    """(b), or the passthrough, at a steady ``rate``: record timestamp -> output readable (read_committed)."""
    from streamml.runtime.naming import group_id

    n = int(rate * seconds)
    who = "passthrough" if passthrough else "streamml"
    name = f"{who} latency at {rate:,}/s ({'exactly-once' if exactly_once else 'at-least-once'})"
    result = ScenarioResult(name, n)
    service, source, output = bench.name("lat"), bench.name("lat-in"), bench.name("lat-out")
    values, keys = data.encode(data.input_table(n, seed=11))
    sent_ms = np.zeros(n, dtype=np.int64)
    seen_ms = np.full(n, -1, dtype=np.int64)
    worker: Worker | None = None
    try:
        bench.admin.create_topic(source, partitions=data.PARTITIONS)
        spec: dict[str, Any] = {
            "settings": bench.settings_overrides(service, "w0"),
            "input": source,
            "max_batch": bench.max_batch,
            "max_wait_ms": max_wait_ms,
            "exactly_once": exactly_once,
            "warmup_s": warmup_s,
        }
        if passthrough:
            bench.admin.create_topic(output, partitions=data.PARTITIONS)
            group = service
            spec.update(kind="passthrough", group=group, worker="w0", output=output)
        else:
            sql = f"CREATE STREAM tx ({data.COLUMNS}) WITH (KAFKA_TOPIC='{source}', VALUE_FORMAT='JSON');\n"
            queries = register(bench, service, sql + scoring_sql(model).format(output=output))
            group = group_id(service, queries[0])
            spec.update(kind="runner", queries=queries)
        worker = Worker(child_argv(spec), bench.workdir / f"latency-{service}.log")
        worker.wait_ready()
        worker.send("GO")
        _wait_group(bench, group)
        stop = threading.Event()
        observer = threading.Thread(target=_observe, args=(bench, output, seen_ms, stop), daemon=True)
        observer.start()
        _produce_steadily(bench.config, source, values, keys, rate, sent_ms)
        deadline = time.monotonic() + 30
        while (seen_ms < 0).any() and time.monotonic() < deadline and worker.proc.poll() is None:
            time.sleep(0.05)
        stop.set()
        observer.join(10)
        worker.send("STOP")
        report = worker.collect()
        if report.get("error"):
            result.error = report["error"]
            return result
        result.seconds, result.cpu_s, result.peak_rss_mib = seconds, report["cpu_s"], report["peak_rss_mib"]
        result.stages = report.get("stages") or {}
        steady = (seen_ms >= 0) & (np.arange(n) >= int(rate * warmup_s))
        lat = (seen_ms - sent_ms)[steady].astype(float)
        if len(lat):
            result.p50_ms, result.p99_ms = percentile(lat.tolist(), 0.5), percentile(lat.tolist(), 0.99)
        result.error = data.check_ids(data.output_ids(v for _, v in data.read_topic(bench.config, output)), range(n))
    except Exception as exc:
        tail = worker.tail(300) if worker is not None else ""
        result.error = f"{type(exc).__name__}: {exc}" + (f" [worker log: {tail}]" if tail else "")
    finally:
        if worker is not None:
            worker.close()
        bench.drop_topics(source, output, service)
    return result


def _wait_group(bench: Bench, group: str, timeout_s: float = 60.0) -> None:
    """Wait until ``group`` is stable with an assignment, so the first records do not wait for the join."""
    from confluent_kafka import ConsumerGroupState
    from confluent_kafka.admin import AdminClient

    client = AdminClient(dict(bench.config))
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        with contextlib.suppress(Exception):
            description = client.describe_consumer_groups([group])[group].result(timeout=5)
            if description.state == ConsumerGroupState.STABLE and any(
                m.assignment.topic_partitions for m in description.members
            ):
                return
        time.sleep(0.1)
    raise TimeoutError(f"consumer group '{group}' did not become stable in {timeout_s:.0f} s")


def _produce_steadily(
    config: dict[str, Any], topic: str, values: list[bytes], keys: list[bytes], rate: int, sent_ms: np.ndarray
) -> None:
    """Produce ``values`` at ``rate`` records/s in 5 ms steps, each stamped with its send time."""
    producer = Producer(config, {"linger.ms": 0})
    start, sent, n = time.monotonic(), 0, len(values)
    while sent < n:
        due = min(n, int((time.monotonic() - start) * rate) + 1)
        if due > sent:
            now = int(time.time() * 1000)
            sent_ms[sent:due] = now
            producer.produce_batch(topic, values[sent:due], keys[sent:due], timestamps=[now] * (due - sent))
            sent = due
        time.sleep(0.005)
    producer.flush()


def _observe(bench: Bench, topic: str, seen_ms: np.ndarray, stop: threading.Event) -> None:
    """Note when each output Id becomes readable ``read_committed``."""
    while not bench.admin.exists(topic) and not stop.is_set():
        time.sleep(0.05)
    props = {"fetch.wait.max.ms": 5}
    with BatchConsumer(bench.config, [topic], isolation="read_committed", properties=props) as reader:
        while not stop.is_set():
            batch = reader.poll_batch(5_000, 0.005)
            if len(batch):
                now = int(time.time() * 1000)
                for i in data.output_ids(batch.values):
                    if 0 <= i < len(seen_ms) and seen_ms[i] < 0:
                        seen_ms[i] = now
