"""User functions: the decorator, STRUCT results, variable arity, failures isolated per row, plug-ins."""

from __future__ import annotations

from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest

from streamml.errors import SqlError
from streamml.sql import FunctionRegistry, SqlEngine, SqlType, UserFunction, udf


@pytest.fixture
def udf_engine() -> SqlEngine:
    registry = FunctionRegistry()

    @udf(name="scale", returns="DOUBLE", params=["DOUBLE", "DOUBLE"], registry=registry)
    def scale(x: pa.Array, factor: pa.Array) -> pa.Array:
        """Multiplies x by factor."""
        return pc.multiply(x, factor)

    @udf(name="norm", returns="DOUBLE", registry=registry)
    def norm(*columns: pa.Array) -> np.ndarray:
        stacked = np.column_stack([c.to_numpy(zero_copy_only=False) for c in columns])
        return np.sqrt((stacked**2).sum(axis=1))

    @udf(name="score", returns="STRUCT<label STRING, score DOUBLE>", registry=registry)
    def score(*columns: pa.Array) -> pa.Array:
        total = pc.add(columns[0], columns[-1])
        labels = pc.if_else(pc.greater(total, 1.0), "fraud", "ok")
        return pa.StructArray.from_arrays([labels, total], names=["LABEL", "SCORE"])

    @udf(name="fragile", returns="DOUBLE", params=["DOUBLE"], registry=registry)
    def fragile(x: pa.Array) -> pa.Array:
        if pc.any(pc.equal(x, 13.0)).as_py():
            raise ValueError("unlucky value 13")
        return x

    def by_model(arg_types: list[SqlType], constants: list[Any]) -> SqlType:
        return SqlType.struct([(str(constants[0]).upper(), SqlType("DOUBLE"))])

    @udf(name="predict", returns=by_model, registry=registry)
    def predict(model: pa.Array, *features: pa.Array) -> pa.Array:
        return pa.StructArray.from_arrays([pc.add(features[0], 0.5)], names=[model[0].as_py().upper()])

    eng = SqlEngine(functions=registry)
    eng.execute("CREATE STREAM s (a DOUBLE, b DOUBLE, c DOUBLE) WITH (KAFKA_TOPIC='s', VALUE_FORMAT='JSON');")
    return eng


BATCH = pa.table({"A": [3.0, 0.1, 13.0], "B": [4.0, 0.2, 1.0], "C": [0.0, 0.3, 2.0]})


def test_fixed_signature(udf_engine: SqlEngine) -> None:
    out = udf_engine.plan("SELECT scale(a, 2) AS r FROM s;").executor().execute(BATCH)
    assert out.table.column("R").to_pylist() == [6.0, 0.2, 26.0]
    with pytest.raises(SqlError, match="SCALE takes 2 arguments, got 1"):
        udf_engine.plan("SELECT scale(a) FROM s;")


def test_variadic_registers_per_arity(udf_engine: SqlEngine) -> None:
    out = udf_engine.plan("SELECT norm(a, b) AS two, norm(a, b, c) AS three FROM s;").executor().execute(BATCH)
    assert out.table.column("TWO").to_pylist()[0] == pytest.approx(5.0)
    assert out.table.column("THREE").to_pylist()[1] == pytest.approx(np.sqrt(0.01 + 0.04 + 0.09))


def test_struct_result(udf_engine: SqlEngine) -> None:
    plan = udf_engine.plan(
        "SELECT score(a, b, c) AS s, score(a, c)->label AS label FROM s WHERE score(a, c)->score > 0.3;"
    )
    assert str(plan.output[0].type) == "STRUCT<`LABEL` STRING, `SCORE` DOUBLE>"
    out = plan.executor().execute(BATCH)
    assert out.table.column("LABEL").to_pylist() == ["fraud", "ok", "fraud"]
    assert out.table.column("S").to_pylist()[0] == {"LABEL": "fraud", "SCORE": 3.0}


def test_return_type_from_constant_argument(udf_engine: SqlEngine) -> None:
    plan = udf_engine.plan("SELECT predict('fraud', a, b)->fraud AS p FROM s;")
    assert plan.executor().execute(BATCH).table.column("P").to_pylist() == [3.5, 0.6, 13.5]


def test_failing_rows_are_isolated(udf_engine: SqlEngine) -> None:
    batch = pa.table({"A": [1.0, 2.0, 13.0, 4.0, 13.0, 6.0, 7.0], "B": [0.0] * 7, "C": [0.0] * 7})
    out = udf_engine.plan("SELECT fragile(a) AS r FROM s;").executor().execute(batch)
    assert out.table.column("R").to_pylist() == [1.0, 2.0, 4.0, 6.0, 7.0]
    assert out.indices.tolist() == [0, 1, 3, 5, 6]
    assert [(f.index, f.reason) for f in out.failures] == [(2, "ValueError: unlucky value 13")] * 1 + [
        (4, "ValueError: unlucky value 13")
    ]
    assert out.counters["failed"] == 2


def test_default_registry_and_describe() -> None:
    @udf(returns="STRING", params=["STRING"])
    def shout(x: pa.Array) -> pa.Array:
        """Upper-cases and adds an exclamation mark."""
        return pc.binary_join_element_wise(pc.utf8_upper(x), "!", "")

    eng = SqlEngine()
    eng.execute("CREATE STREAM s (a VARCHAR) WITH (KAFKA_TOPIC='s', VALUE_FORMAT='JSON');")
    out = eng.plan("SELECT shout(a) AS r FROM s;").executor().execute(pa.table({"A": ["hi"]}))
    assert out.table.column("R").to_pylist() == ["HI!"]
    [described] = eng.execute("DESCRIBE FUNCTION shout;")
    assert "Upper-cases" in described.message


def test_entry_point_plugins(monkeypatch: pytest.MonkeyPatch) -> None:
    import sys

    udf_module = sys.modules["streamml.sql.udf"]

    class FakeEntryPoint:
        def __init__(self, name: str, obj: Any) -> None:
            self.name, self.value, self._obj = name, f"plugin:{name}", obj

        def load(self) -> Any:
            return self._obj

    fn = UserFunction("PLUS_ONE", lambda x: pc.add(x, 1), SqlType("BIGINT"), (SqlType("BIGINT"),))

    def register(registry: FunctionRegistry) -> None:
        registry.add(UserFunction("MINUS_ONE", lambda x: pc.subtract(x, 1), SqlType("BIGINT"), (SqlType("BIGINT"),)))

    monkeypatch.setattr(
        udf_module, "entry_points", lambda group: [FakeEntryPoint("a", fn), FakeEntryPoint("b", register)]
    )
    registry = FunctionRegistry()
    assert registry.load_entry_points() == ["a", "b"]
    assert registry.names() == ["MINUS_ONE", "PLUS_ONE"]
