"""``streamml run`` as users run it: a pipeline file, a worker process, SIGKILL, restart — exactly once."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import orjson
import pytest

from streamml.kafka import Admin, BatchConsumer, Producer
from tests.cli.conftest import STREAMML

pytestmark = [pytest.mark.broker, pytest.mark.slow]

SENSOR_COLUMNS = (
    "coolant_temp DOUBLE, intake_air_temp DOUBLE, intake_air_flow_speed DOUBLE, battery_percentage DOUBLE, "
    "battery_voltage DOUBLE, current_draw DOUBLE, speed DOUBLE, engine_vibration_amplitude DOUBLE, "
    "throttle_pos DOUBLE, tire_pressure11 INT, tire_pressure12 INT, tire_pressure21 INT, tire_pressure22 INT, "
    "accelerometer11_value DOUBLE, accelerometer12_value DOUBLE, accelerometer21_value DOUBLE, "
    "accelerometer22_value DOUBLE, control_unit_firmware INT, failure_occurred VARCHAR"
)
T0 = (int(time.time() * 1000) // 300_000 - 12) * 300_000  # an hour ago, on a 5-minute boundary (within retention)


def sensor_record(i: int) -> bytes:
    names = [c.split()[0] for c in SENSOR_COLUMNS.split(", ")]
    row = {n: (i % 7) + 0.5 for n in names}
    row.update({n: 30 + i % 3 for n in names if n.startswith("tire_pressure")})
    row.update(control_unit_firmware=1000, failure_occurred="false" if i % 50 else "true")
    return orjson.dumps(row)


def start_runner(env: dict[str, str], pipeline: Path) -> subprocess.Popen[bytes]:
    log = open(pipeline.with_suffix(f".{time.monotonic_ns()}.log"), "wb")  # noqa: SIM115
    return subprocess.Popen([STREAMML, "-v", "run", str(pipeline), "--max-batch", "2000"], env=env,
                            stdout=subprocess.DEVNULL, stderr=log)  # fmt: skip


def read_all(config: dict, topic: str, isolation: str = "read_committed") -> list[tuple[bytes | None, bytes | None]]:
    rows: list[tuple[bytes | None, bytes | None]] = []
    with BatchConsumer(config, [topic], isolation=isolation, track_end=True) as reader:  # type: ignore[arg-type]
        while not reader.reached_end():
            batch = reader.poll_batch(20_000, 0.5)
            rows += list(zip(batch.keys, batch.values, strict=True))
    return rows


def wait_output(admin: Admin, topic: str, at_least: int, proc: subprocess.Popen[bytes], timeout_s: float = 120) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"runner exited {proc.returncode}")
        if admin.exists(topic) and sum(h for _, h in admin.watermarks(topic).values()) >= at_least:
            return
        time.sleep(0.3)
    raise AssertionError(f"{topic} never reached {at_least} records")


def latest_counts(config: dict, topic: str) -> dict[bytes | None, int]:
    """The latest committed count per windowed key of a counts table's topic."""
    latest: dict[bytes | None, int] = {}
    for key, value in read_all(config, topic):
        assert value is not None
        latest[key] = orjson.loads(value)["N"]
    return latest


def test_kill_9_and_restart_is_exactly_once(
    bootstrap: str,
    kafka_config: dict,
    admin: Admin,
    topic: Callable[..., str],
    unique: Callable[[str], str],
    tmp_path: Path,
) -> None:
    source, copied, counts = topic(partitions=3), unique("copied"), unique("counts")
    n = 50_000

    def produce(ids: range, pause_s: float = 0.0) -> None:
        with Producer(kafka_config) as producer:
            for start in range(ids.start, ids.stop, 1_000):
                chunk = range(start, min(start + 1_000, ids.stop))
                producer.produce_batch(source, [sensor_record(i) for i in chunk],
                                       [f"car{i % 10}".encode() for i in chunk],
                                       timestamps=[T0 + (i % 1000) * 1000 for i in chunk])  # fmt: skip
                producer.flush()
                time.sleep(pause_s)

    produce(range(5_000))  # the other 45k arrive over ~5 s, while the first worker runs and dies
    streaming = threading.Thread(target=produce, args=(range(5_000, n), 0.1), daemon=True)
    pipeline = tmp_path / "pipeline.sql"
    pipeline.write_text(
        f"CREATE STREAM sensors ({SENSOR_COLUMNS}) WITH (KAFKA_TOPIC='{source}', VALUE_FORMAT='JSON');\n"
        f"CREATE STREAM copied WITH (KAFKA_TOPIC='{copied}') AS SELECT ROWKEY AS car, speed FROM sensors;\n"
        f"CREATE TABLE counts WITH (KAFKA_TOPIC='{counts}') AS SELECT ROWKEY AS car, COUNT(*) AS n FROM sensors "
        "WINDOW TUMBLING (SIZE 5 MINUTES) GROUP BY ROWKEY;\n"
    )
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("STREAMML_")},
           "STREAMML_BOOTSTRAP": bootstrap, "STREAMML_SERVICE_ID": unique("svc"), "STREAMML_HOME": str(tmp_path)}  # fmt: skip
    first = start_runner(env, pipeline)
    try:
        wait_output(admin, copied, 3_000, first)
        streaming.start()
        wait_output(admin, copied, 8_000, first)
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait(30)
    assert streaming.is_alive(), "the first worker must die mid-stream for this test to mean anything"
    second = start_runner(env, pipeline)
    try:
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:  # both queries have caught up (a count above n fails below)
            if len(read_all(kafka_config, copied)) >= n and sum(latest_counts(kafka_config, counts).values()) >= n:
                break
            time.sleep(1)
    finally:
        second.send_signal(signal.SIGTERM)
        second.wait(60)
    logs = "\n".join(p.read_text()[-3000:] for p in sorted(tmp_path.glob("*.log")))
    assert second.returncode == 0, logs
    committed = read_all(kafka_config, copied)
    assert len(committed) == n, f"every input record exactly once in the committed output\n{logs}"

    latest = latest_counts(kafka_config, counts)
    expected = Counter((f"car{i % 10}", (i % 1000) * 1000 // 300_000) for i in range(n))
    assert sum(latest.values()) == n, "windowed counts neither lose nor double count across the crash"
    assert len(latest) == len(expected)


def test_sql_cli_runs_statements_and_reports_errors(
    cli: Callable[..., subprocess.CompletedProcess[str]],
    topic: Callable[..., str],
    unique: Callable[[str], str],
    kafka_config: dict,
) -> None:
    source = topic()
    env = {"STREAMML_SERVICE_ID": unique("svc")}
    with Producer(kafka_config) as producer:
        producer.produce_batch(source, [sensor_record(i) for i in range(10)])
    created = cli(
        "sql", "-e", f"CREATE STREAM s ({SENSOR_COLUMNS}) WITH (KAFKA_TOPIC='{source}', VALUE_FORMAT='JSON');", env=env
    )
    assert "Stream created" in created.stdout
    pulled = cli("sql", "-o", "jsonl", "-e", "SELECT speed, failure_occurred FROM s WHERE speed > 3;", env=env)
    rows = [orjson.loads(line) for line in pulled.stdout.splitlines()]
    assert [r["SPEED"] for r in rows] == [(i % 7) + 0.5 for i in range(10) if (i % 7) + 0.5 > 3]
    bad = cli("sql", "-e", "SELECT speed\nFROM s WHERE speed >;", env=env, check=False)
    assert bad.returncode == 6
    assert "line 2, column 21" in bad.stderr and "^" in bad.stderr and "Traceback" not in bad.stderr
    unknown = cli("sql", "-e", "SELECT sped FROM s;", env=env, check=False)
    assert "SPEED" in unknown.stderr  # the closest name is suggested
    described = cli("sql", "-e", "DESCRIBE s;", env=env).stdout
    assert "TIRE_PRESSURE11" in described and "INTEGER" in described.upper()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(pytest.main([__file__, "-x", "-q"]))


def test_scale_out_two_then_three_workers_exactly_once(
    bootstrap: str,
    kafka_config: dict,
    admin: Admin,
    topic: Callable[..., str],
    unique: Callable[[str], str],
    tmp_path: Path,
) -> None:
    source, copied = topic(partitions=6), unique("copied")
    pipeline = tmp_path / "scale.sql"
    pipeline.write_text(
        f"CREATE STREAM events (n BIGINT) WITH (KAFKA_TOPIC='{source}', VALUE_FORMAT='JSON');\n"
        f"CREATE STREAM copied WITH (KAFKA_TOPIC='{copied}') AS SELECT n FROM events;\n"
    )
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("STREAMML_")},
           "STREAMML_BOOTSTRAP": bootstrap, "STREAMML_SERVICE_ID": unique("svc"), "STREAMML_HOME": str(tmp_path)}  # fmt: skip
    log = (tmp_path / "workers.log").open("wb")
    # small batches, so workers are under load (a full batch polls the next one early) when the group rebalances
    batch = ["--max-batch", "200"]
    two = subprocess.Popen([STREAMML, "run", str(pipeline), "--workers", "2", "--metrics-port", "0", *batch], env=env,
                           stdout=subprocess.DEVNULL, stderr=log)  # fmt: skip
    third: subprocess.Popen[bytes] | None = None
    n, sent = 30_000, 0
    try:
        with Producer(kafka_config) as producer:
            for chunk in range(30):
                values = [orjson.dumps({"n": i}) for i in range(sent, sent + n // 30)]
                producer.produce_batch(source, values, [str(v).encode() for v in range(sent, sent + n // 30)])
                producer.flush()
                sent += n // 30
                if chunk == 10:
                    third = subprocess.Popen([STREAMML, "run", str(pipeline), *batch],
                                             env={**env, "STREAMML_WORKER_ID": "third"},
                                             stdout=subprocess.DEVNULL, stderr=log)  # fmt: skip
                time.sleep(0.3)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and len(read_all(kafka_config, copied)) < n:
            time.sleep(1)
        for _ in range(10):  # status records are snapshots published every 2 s: wait for one with the totals
            status = subprocess.run(
                [STREAMML, "status", "--json"], check=False, env=env, capture_output=True, text=True, timeout=60
            )
            workers = [orjson.loads(line) for line in status.stdout.splitlines()]
            if len(workers) == 3 and sum(w["queries"][0]["records_in"] for w in workers if w["queries"]) >= n:
                break
            time.sleep(1)
    finally:
        for proc in (two, third):
            if proc is not None:
                proc.send_signal(signal.SIGTERM)
        for proc in (two, third):
            if proc is not None:
                assert proc.wait(60) == 0, (tmp_path / "workers.log").read_text()[-3000:]
    values = sorted(orjson.loads(v)["N"] for _, v in read_all(kafka_config, copied) if v is not None)
    assert values == list(range(n)), "every record exactly once across rebalances"
    assert status.returncode == 0, status.stderr
    assert len(workers) == 3, status.stdout
    assert all(w["queries"][0]["query"] == "CSAS_COPIED_0" and w["queries"][0]["state"] == "RUNNING" for w in workers)
    assert sum(w["queries"][0]["records_in"] for w in workers) >= n


def test_sql_prompt_reads_statements_until_end_of_input(
    cli: Callable[..., subprocess.CompletedProcess[str]], topic: Callable[..., str], unique: Callable[[str], str]
) -> None:
    source = topic()
    env = {"STREAMML_SERVICE_ID": unique("svc")}
    script = (
        f"CREATE STREAM s (speed DOUBLE)\n  WITH (KAFKA_TOPIC='{source}', VALUE_FORMAT='JSON');\n"
        "SELECT nope FROM s;\n"  # an error is reported and the prompt goes on
        "SHOW STREAMS;\n"
    )
    proc = cli("sql", input=script, env=env)
    assert "Stream created" in proc.stdout
    assert "unknown column 'NOPE'" in proc.stderr or "NOPE" in proc.stderr
    assert source in proc.stdout  # SHOW STREAMS lists it after the error
