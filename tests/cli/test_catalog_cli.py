"""Commands that load the SQL catalog plan stored queries with the runner's functions, and survive ones that
no longer plan: through the installed command, against the real broker."""

from __future__ import annotations

import subprocess
from collections.abc import Callable

import numpy as np
import pyarrow as pa
import pytest

from streamml.formats import get_format
from streamml.kafka import Producer

pytestmark = pytest.mark.broker

Run = Callable[..., subprocess.CompletedProcess[str]]


def _produce(config: dict, topic: str, rows: int = 300) -> None:
    rng = np.random.default_rng(3)
    table = pa.table({"Id": np.arange(rows, dtype=np.int64), "Amount": rng.gamma(2.0, 50.0, rows),
                      "Fee": rng.normal(1.0, 0.1, rows)})  # fmt: skip
    with Producer(config) as producer:
        producer.produce_batch(topic, get_format("JSON", table.schema).encode(table))


def test_stored_predict_query_does_not_break_training_or_listing(
    cli: Run, kafka_config: dict, topic: Callable[..., str], unique: Callable[[str], str]
) -> None:
    env = {"STREAMML_SERVICE_ID": unique("svc")}
    source = topic()
    _produce(kafka_config, source)
    train = ("train", "autoencoder", "--from", source, "--name", "m", "-p", "epochs=3", "--threads", "1")
    cli(*train, env=env)
    cli("sql", "-e", f"CREATE STREAM tx (Id BIGINT, Amount DOUBLE, Fee DOUBLE) "
        f"WITH (KAFKA_TOPIC='{source}', VALUE_FORMAT='JSON');", env=env)  # fmt: skip
    created = cli("sql", "-e", "CREATE STREAM scored AS SELECT Id, PREDICT('m', Amount, Fee) AS p FROM tx;", env=env)
    assert "CSAS_SCORED" in created.stdout + created.stderr

    again = cli(*train, check=False, env=env)  # plans the stored PREDICT query with PREDICT: no warning at all
    assert again.returncode == 0, again.stderr
    assert "no longer plans" not in again.stderr
    listed = cli("sql", "-e", "SHOW QUERIES;", env=env)
    assert "CSAS_SCORED" in listed.stdout and "NOT PLANNED" not in listed.stdout

    for version in ("1", "2"):  # the model goes away: the stored query no longer plans
        cli("models", "delete", f"m:{version}", "--force", env=env)
    unrelated = cli(*train, "--name", "other", check=False, env=env)
    assert unrelated.returncode == 0, unrelated.stderr
    assert "CSAS_SCORED" in unrelated.stderr and "no longer plans" in unrelated.stderr  # a warning, not an error
    listed = cli("sql", "-e", "SHOW QUERIES;", env=env)
    line = next(row for row in listed.stdout.splitlines() if "CSAS_SCORED" in row)
    assert "NOT PLANNED" in line and "'m'" in line and "SCORED" in line.split("|")[2]

    cli("sql", "-e", "CREATE STREAM big AS SELECT Id FROM tx WHERE Amount > 100;", env=env)  # saving keeps it
    listed = cli("sql", "-e", "SHOW QUERIES;", env=env).stdout
    assert "CSAS_SCORED" in listed and "CSAS_BIG" in listed
    scored_id = next(row.split("|")[0].strip() for row in listed.splitlines() if "CSAS_SCORED" in row)
    cli("sql", "-e", f"TERMINATE {scored_id};", env=env)
    listed = cli("sql", "-e", "SHOW QUERIES;", env=env).stdout
    assert "CSAS_SCORED" not in listed and "CSAS_BIG" in listed
