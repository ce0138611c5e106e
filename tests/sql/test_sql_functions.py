"""Functions defined in SQL: ``CREATE FUNCTION name AS f('constant')->field`` names a model (or any user
function with constant arguments), is stored with the catalog, and a call used twice is computed once."""

from __future__ import annotations

import pyarrow as pa
import pyarrow.compute as pc
import pytest

from streamml.errors import SqlError
from streamml.sql import Catalog, FunctionRegistry, SqlEngine, udf

N = 5_000


@pytest.fixture
def calls() -> list[int]:
    return []


@pytest.fixture
def engine(calls: list[int]) -> SqlEngine:
    registry = FunctionRegistry()

    @udf(name="predict", returns="STRUCT<SCORE DOUBLE, MODEL STRING>", registry=registry)
    def predict(model: pa.Array, *features: pa.Array) -> pa.Array:
        calls.append(len(model))
        total = features[0]
        for f in features[1:]:
            total = pc.add(total, f)
        return pa.StructArray.from_arrays([total, pc.cast(model, pa.string())], names=["SCORE", "MODEL"])

    eng = SqlEngine(functions=registry)
    eng.execute(
        "CREATE STREAM readings (car VARCHAR KEY, a DOUBLE, b DOUBLE) WITH (KAFKA_TOPIC='r', VALUE_FORMAT='JSON');"
    )
    return eng


def batch() -> pa.Table:
    a = pa.array([float(i % 10) for i in range(N)])
    return pa.table({"CAR": [f"car{i % 25}" for i in range(N)], "A": a, "B": pc.multiply(a, 0.5)})


def test_a_named_model_function_runs_the_udf_demo_query(engine: SqlEngine, calls: list[int]) -> None:
    (created,) = engine.execute("CREATE FUNCTION anomaly AS PREDICT('sensor-ae')->score;")
    assert created.kind == "CREATED"
    plan = engine.plan("SELECT car, ANOMALY(a, b) AS score FROM readings WHERE ANOMALY(a, b) > 9;")
    out = plan.executor().execute(batch())
    expected = [x * 1.5 for x in (float(i % 10) for i in range(N)) if x * 1.5 > 9]
    assert out.table.column("SCORE").to_pylist() == expected
    assert sum(calls) == N  # used twice, computed once per row (in DuckDB's chunks)
    calls.clear()
    direct = engine.plan(
        "SELECT car, PREDICT('sensor-ae', a, b)->score AS score FROM readings WHERE PREDICT('sensor-ae', a, b)->score > 9;"
    )
    assert direct.executor().execute(batch()).table.column("SCORE").to_pylist() == expected
    assert sum(calls) == N


def test_definitions_are_stored_listed_described_and_dropped(engine: SqlEngine) -> None:
    engine.execute("CREATE FUNCTION which AS PREDICT('m1')->model;")
    stored = Catalog.from_json(engine.catalog.to_json())
    assert stored.functions == engine.catalog.functions
    again = SqlEngine(catalog=stored, functions=engine.functions)
    out = again.plan("SELECT WHICH(a) AS m FROM readings;").executor().execute(batch().slice(0, 3))
    assert out.table.column("M").to_pylist() == ["m1"] * 3
    assert "WHICH | SQL" in engine.execute("SHOW FUNCTIONS;")[0].message
    assert "PREDICT('m1')->model" in engine.execute("DESCRIBE FUNCTION which;")[0].message
    with pytest.raises(SqlError, match="already exists"):
        engine.execute("CREATE FUNCTION which AS PREDICT('m2');")
    engine.execute("CREATE OR REPLACE FUNCTION which AS PREDICT('m2')->model;")
    out = engine.plan("SELECT which(a) AS m FROM readings;").executor().execute(batch().slice(0, 1))
    assert out.table.column("M").to_pylist() == ["m2"]
    assert engine.execute("DROP FUNCTION which;")[0].kind == "DROPPED"
    with pytest.raises(SqlError, match="unknown function 'WHICH'"):
        engine.plan("SELECT which(a) FROM readings;")
    engine.execute("DROP FUNCTION IF EXISTS which;")


@pytest.mark.parametrize(
    ("statement", "message"),
    [
        ("CREATE FUNCTION abs AS PREDICT('m');", "built-in or registered"),
        ("CREATE FUNCTION f AS nothing('m');", "a call of a user function"),
        ("CREATE FUNCTION f AS PREDICT(a);", "must be constants"),
        ("CREATE FUNCTION f AS 1 + 2;", "a call of a user function"),
        ("DROP FUNCTION f;", "unknown function 'F'"),
    ],
)
def test_bad_definitions_are_refused_with_their_position(engine: SqlEngine, statement: str, message: str) -> None:
    with pytest.raises(SqlError, match=message) as raised:
        engine.execute(statement)
    assert raised.value.line == 1


def test_a_plan_names_the_constant_arguments_of_its_calls(engine: SqlEngine) -> None:
    engine.execute("CREATE FUNCTION anomaly AS PREDICT('sensor-ae')->score;")
    plan = engine.plan("SELECT car, ANOMALY(a, b) AS s, PREDICT('fraud', a)->score AS f FROM readings;")
    assert plan.constant_arguments("predict") == {("sensor-ae", None, None), ("fraud", None)}
    assert engine.plan("SELECT car, a FROM readings;").constant_arguments("PREDICT") == set()
