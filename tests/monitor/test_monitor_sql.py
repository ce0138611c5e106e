"""``CREATE MONITOR`` / ``DROP MONITOR`` through the product's SQL entry points, against the test broker."""

from __future__ import annotations

import subprocess
import uuid
from collections.abc import Callable

import pytest

import streamml
from streamml.config import Settings
from streamml.errors import SqlError
from streamml.monitor.spec import read_monitors

PREDICTIONS = ("CREATE STREAM scores (ID BIGINT, AMOUNT DOUBLE, P STRUCT<SCORE DOUBLE, IS_ANOMALY BOOLEAN, "
               "MODEL VARCHAR, VERSION INTEGER>) WITH (KAFKA_TOPIC='{t}_scores', VALUE_FORMAT='JSON', PARTITIONS=1);"
               "CREATE STREAM truth (ID BIGINT, CLASS VARCHAR) WITH (KAFKA_TOPIC='{t}_truth', VALUE_FORMAT='JSON', "
               "PARTITIONS=1);")  # fmt: skip
DEFINITION = ("CREATE MONITOR {if_not} fraud WITH (MODEL='fraud', PREDICTIONS='scores', LABELS='truth', KEY='ID', "
              "LABEL='CLASS', PREDICTION='P->IS_ANOMALY', SCORE='P->SCORE', POSITIVE='1', WINDOW='10 SECONDS', "
              "WITHIN='30 SECONDS', PSI=0.3);")  # fmt: skip


@pytest.fixture
def settings(kafka_settings: Settings) -> Settings:
    service = f"svc-{uuid.uuid4().hex[:8]}"
    settings = kafka_settings.model_copy(update={"service_id": service})
    streamml.sql(PREDICTIONS.format(t=service), settings=settings)
    return settings


def test_create_monitor_defines_what_the_cli_defines(settings: Settings) -> None:
    (outcome,) = streamml.sql(DEFINITION.format(if_not=""), settings=settings)
    assert outcome.result.kind == "CREATED" and "Monitor FRAUD created" in outcome.message
    spec = read_monitors(settings)["FRAUD"]
    expected = ("fraud", "scores", "truth", "ID", "CLASS")
    assert (spec.model, spec.predictions, spec.labels, spec.key, spec.label) == expected
    assert (spec.window_ms, spec.within_ms, spec.positive) == (10_000, 30_000, "1")
    assert spec.alert_rules()[0].threshold == 0.3  # PSI=0.3: the drift rule's threshold

    with pytest.raises(SqlError) as twice:
        streamml.sql("SHOW STREAMS;\n" + DEFINITION.format(if_not=""), settings=settings)
    assert "already exists" in twice.value.message and twice.value.line == 2
    (kept,) = streamml.sql(DEFINITION.format(if_not="IF NOT EXISTS"), settings=settings)
    assert "already exists" in kept.message and kept.result.kind == "TEXT"

    (dropped,) = streamml.sql("DROP MONITOR fraud;", settings=settings)
    assert dropped.result.kind == "DROPPED" and "FRAUD" not in read_monitors(settings)
    with pytest.raises(SqlError, match="no monitor named"):
        streamml.sql("DROP MONITOR fraud;", settings=settings)
    assert "does not exist" in streamml.sql("DROP MONITOR IF EXISTS fraud;", settings=settings)[0].message


def test_a_wrong_definition_is_refused_at_its_statement_and_nothing_is_stored(settings: Settings) -> None:
    cases = [
        ("CREATE MONITOR m WITH (MODEL='fraud', PREDICTIONS='scores', LABELS='truth', KEY='ID', WINDOWS='1 MINUTE');",
         "unknown monitor property WINDOWS"),
        ("CREATE MONITOR m WITH (MODEL='fraud', PREDICTIONS='scores', LABELS='truth');", "needs KEY"),
        ("CREATE MONITOR m WITH (MODEL='fraud', PREDICTIONS='nope', LABELS='truth', KEY='ID', LABEL='CLASS', "
         "PREDICTION='P->IS_ANOMALY');", "'nope' is not in the catalog"),
        ("CREATE MONITOR m WITH (MODEL='fraud', PREDICTIONS='scores', LABELS='truth', KEY='ID', LABEL='CLASS', "
         "PREDICTION='P->IS_ANOMALY', WITHIN='soon');", "soon"),
    ]  # fmt: skip
    for statement, expected in cases:
        with pytest.raises(SqlError) as refused:
            streamml.sql(f"SHOW STREAMS;\n  {statement}", settings=settings)
        assert expected in refused.value.message, (statement, refused.value.message)
        assert (refused.value.line, refused.value.column) == (2, 3), statement
    assert read_monitors(settings) == {}


def test_the_sql_command_runs_monitor_statements(cli: Callable[..., subprocess.CompletedProcess[str]]) -> None:
    service = {"STREAMML_SERVICE_ID": f"svc-{uuid.uuid4().hex[:8]}"}
    cli("sql", "-e", PREDICTIONS.format(t=service["STREAMML_SERVICE_ID"]), env=service)
    created = cli("sql", "-e", DEFINITION.format(if_not=""), env=service)
    assert "Monitor FRAUD created" in created.stdout
    assert "FRAUD" in cli("monitor", "list", env=service).stdout
    assert "P->IS_ANOMALY AS PREDICTION" in cli("monitor", "explain", "fraud", env=service).stdout  # any case
    refused = cli("sql", "-e", "DROP MONITOR nothing;", env=service, check=False)
    assert refused.returncode != 0 and "no monitor named" in refused.stderr and "Traceback" not in refused.stderr
    cli("monitor", "stop", "fraud", env=service)
    assert "FRAUD" not in cli("monitor", "list", env=service).stdout
