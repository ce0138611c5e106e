"""``streamml monitor`` as a user types it, against the test broker; and the latency / dead-letter figures."""

from __future__ import annotations

import subprocess
import time
import uuid
from collections.abc import Callable

import pytest

from streamml.monitor.health import health_of


def test_define_list_explain_and_remove_a_monitor(cli: Callable[..., subprocess.CompletedProcess[str]]) -> None:
    service = {"STREAMML_SERVICE_ID": f"svc-{uuid.uuid4().hex[:8]}"}
    cli("sql", "-e", "CREATE STREAM scores (ID BIGINT, AMOUNT DOUBLE, P STRUCT<SCORE DOUBLE, IS_ANOMALY BOOLEAN, "
        "MODEL VARCHAR, VERSION INTEGER>) WITH (KAFKA_TOPIC='scores', VALUE_FORMAT='JSON', PARTITIONS=1);"
        "CREATE STREAM truth (ID BIGINT, CLASS VARCHAR) WITH (KAFKA_TOPIC='truth', VALUE_FORMAT='JSON', PARTITIONS=1);",
        env=service)  # fmt: skip
    # without a registered model nothing says what the prediction is: a clear error, no traceback, nothing stored
    refused = cli("monitor", "start", "fraud", "--predictions", "scores", "--labels", "truth", "--key", "ID",
                  "--label-column", "CLASS", "--detach", env=service, check=False)  # fmt: skip
    assert refused.returncode != 0 and "--prediction" in refused.stderr and "Traceback" not in refused.stderr
    cli("monitor", "start", "fraud", "--predictions", "scores", "--labels", "truth", "--key", "ID", "--label-column",
        "CLASS", "--prediction", "P->IS_ANOMALY", "--score", "P->SCORE", "--positive", "1", "--within", "30 SECONDS",
        "--window", "10 SECONDS", "--detach", env=service)  # fmt: skip
    listed = cli("monitor", "list", env=service).stdout
    assert "fraud" in listed and "scores" in listed and "30000 ms" in listed
    explained = cli("monitor", "explain", "fraud", env=service).stdout
    assert "P->IS_ANOMALY AS PREDICTION" in explained and "FROM truth" in explained
    missing = cli("monitor", "start", "fraud", "--predictions", "nope", "--labels", "truth", "--key", "ID",
                  "--label-column", "CLASS", "--prediction", "P->IS_ANOMALY", "--detach", env=service, check=False)  # fmt: skip
    assert missing.returncode != 0 and "'nope' is not in the catalog" in missing.stderr
    cli("monitor", "stop", "fraud", env=service)
    assert "fraud" not in cli("monitor", "list", env=service).stdout
    assert "no monitor named" in cli("monitor", "stop", "fraud", env=service, check=False).stderr


def test_health_takes_the_worst_live_worker_and_skips_stale_ones() -> None:
    now = time.time()
    query = {"query": "CSAS_SCORES_1", "records_in": 100, "dead_letters": 2, "latency_p50_ms": 5.0,
             "latency_p95_ms": 9.0, "latency_p99_ms": 12.0}  # fmt: skip
    workers = [
        {"worker": "a/1", "time": now, "queries": [query]},
        {"worker": "b/2", "time": now, "queries": [{**query, "latency_p99_ms": 30.0, "records_in": 50}]},
        {"worker": "c/3", "time": now - 3600, "queries": [{**query, "latency_p99_ms": 999.0}]},  # long gone
        {"worker": "d/4", "time": now, "queries": [{**query, "query": "OTHER", "latency_p99_ms": 500.0}]},
    ]
    health = health_of(workers, {"CSAS_SCORES_1"})
    assert health["latency_p99_ms"] == 30.0 and health["latency_p50_ms"] == 5.0
    assert health["records_in"] == 150 and health["dead_letters"] == 4
    assert health_of([], {"CSAS_SCORES_1"}) == pytest.approx({"records_in": 0.0, "dead_letters": 0.0})


def test_a_running_monitor_is_listed_by_show_queries(kafka_settings, unique) -> None:  # type: ignore[no-untyped-def]
    import threading

    from streamml.monitor.spec import MonitorSpec, publish_monitor
    from streamml.monitor.supervisor import MonitorSupervisor
    from streamml.runtime.session import Session, wait_for

    settings = kafka_settings.model_copy(update={"service_id": unique("svc")})
    session = Session(settings)
    session.execute(f"CREATE STREAM s (ID BIGINT, P STRUCT<SCORE DOUBLE, IS_ANOMALY BOOLEAN, MODEL VARCHAR, VERSION INTEGER>) "
                    f"WITH (KAFKA_TOPIC='{unique('s')}', VALUE_FORMAT='JSON', PARTITIONS=1);"
                    f"CREATE STREAM l (ID BIGINT, Y VARCHAR) WITH (KAFKA_TOPIC='{unique('l')}', VALUE_FORMAT='JSON', PARTITIONS=1);")  # fmt: skip
    publish_monitor(settings, MonitorSpec(name="watch-s", model="m", predictions="s", labels="l", key="ID", label="Y",
                                          prediction="P->IS_ANOMALY", score="P->SCORE", version="P->VERSION"))  # fmt: skip
    supervisor, stop = MonitorSupervisor(settings, refresh_s=0.5), threading.Event()
    thread = threading.Thread(target=supervisor.run, args=(stop,), daemon=True)
    thread.start()
    try:
        shown: list[str] = [""]

        def listed() -> bool:
            shown[0] = session.execute("SHOW QUERIES;")[0].message
            return "MONITOR_WATCH_S | RUNNING on" in shown[0]

        assert wait_for(listed, 60, interval_s=1.0), shown[0]
        assert "s JOIN l ON ID WITHIN 3600000 MS" in shown[0]
    finally:
        stop.set()
        thread.join(60)
