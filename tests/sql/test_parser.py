"""Grammar coverage, statement splitting and syntax errors."""

from __future__ import annotations

import pytest

from streamml.errors import SqlError
from streamml.sql import ast, parse, parse_statement, parse_type
from streamml.sql.types import SqlType


def test_statements_keep_text_and_start_line() -> None:
    text = "-- setup\nSET 'auto.offset.reset'='earliest';\n\nshow streams; LIST TOPICS;\nDESCRIBE x EXTENDED"
    stmts = parse(text)
    assert [type(s).__name__ for s in stmts] == ["SetProperty", "Show", "Show", "Describe"]
    assert stmts[0].text == "SET 'auto.offset.reset'='earliest'"
    assert [s.pos.line for s in stmts] == [2, 4, 4, 5]
    assert isinstance(stmts[3], ast.Describe) and stmts[3].extended


def test_identifiers_and_keywords() -> None:
    stmt = parse_statement(
        'create STREAM `MixedCase` ("Quoted" int, plain Int, Key varchar KEY) '
        "with (Kafka_Topic='t', value_format='json')"
    )
    assert isinstance(stmt, ast.CreateSource)
    assert stmt.name == "MixedCase"
    assert [(c.name, c.key) for c in stmt.columns] == [("Quoted", False), ("PLAIN", False), ("KEY", True)]
    assert stmt.properties == {"KAFKA_TOPIC": "t", "VALUE_FORMAT": "json"}


def test_all_statement_kinds() -> None:
    text = """
    CREATE OR REPLACE TABLE IF NOT EXISTS t (id INT PRIMARY KEY, v DOUBLE)
      WITH (KAFKA_TOPIC='t', FORMAT='JSON', PARTITIONS=3);
    CREATE TABLE agg WITH (KAFKA_TOPIC='agg') AS SELECT id, COUNT(*) FROM s GROUP BY id;
    INSERT INTO s2 SELECT * FROM s;
    DROP STREAM IF EXISTS s DELETE TOPIC;
    DESCRIBE FUNCTION mask;
    TERMINATE CSAS_X_0; TERMINATE ALL;
    EXPLAIN SELECT * FROM s; EXPLAIN CSAS_X_0;
    UNSET 'a';
    SELECT * FROM s EMIT CHANGES LIMIT 3;
    """
    kinds = [type(s).__name__ for s in parse(text)]
    assert kinds == ["CreateSource", "CreateAsSelect", "InsertInto", "DropSource", "DescribeFunction", "Terminate",
                     "Terminate", "Explain", "Explain", "UnsetProperty", "SelectStatement"]  # fmt: skip
    stmts = parse(text)
    assert stmts[0].properties["PARTITIONS"] == 3  # type: ignore[attr-defined]
    assert stmts[3].delete_topic  # type: ignore[attr-defined]
    assert stmts[10].query.limit == 3  # type: ignore[attr-defined]


def test_query_clauses() -> None:
    stmt = parse_statement(
        "SELECT a.x, b->c->d AS e, f[1] g, COUNT(*), CAST(x AS DECIMAL(4, 2)), x NOT IN (1, 2) "
        "FROM s a LEFT JOIN t b WITHIN (1 HOUR, 2 MINUTES) ON a.x = b.y "
        "WINDOW HOPPING (SIZE 5 MINUTES, ADVANCE BY 1 MINUTE, GRACE PERIOD 10 SECONDS) "
        "WHERE -x + 2 * 3 > 1 AND NOT y IS NULL GROUP BY car PARTITION BY car HAVING COUNT(*) > 1 EMIT FINAL LIMIT 5"
    )
    assert isinstance(stmt, ast.SelectStatement)
    q = stmt.query
    assert q.joins[0].kind == "LEFT" and q.joins[0].within == (3_600_000, 120_000)
    assert q.window == ast.WindowSpec(kind="HOPPING", size_ms=300_000, advance_ms=60_000, grace_ms=10_000)
    assert q.emit == "FINAL" and q.limit == 5
    assert q.select[2].alias == "G"
    assert q.select[1].expr == ast.Dereference(base=ast.Dereference(base=ast.ColumnRef(name="B"), field="C"), field="D")
    sess = parse_statement("SELECT k, COUNT(*) FROM s WINDOW SESSION (30 SECONDS) GROUP BY k")
    assert sess.query.window.kind == "SESSION"  # type: ignore[attr-defined]


def test_operator_precedence() -> None:
    q = parse_statement("SELECT 1 + 2 * 3 FROM s").query  # type: ignore[attr-defined]
    expr = q.select[0].expr
    assert isinstance(expr, ast.BinaryOp) and expr.op == "+"
    assert isinstance(expr.right, ast.BinaryOp) and expr.right.op == "*"
    q = parse_statement("SELECT a FROM s WHERE a = 1 OR b = 2 AND c = 3").query  # type: ignore[attr-defined]
    assert q.where.op == "OR" and q.where.right.op == "AND"


def test_types() -> None:
    t = parse_type("STRUCT<a INT, `b` ARRAY<MAP<STRING, DOUBLE>>>")
    assert t == SqlType.struct(
        [("A", SqlType("INTEGER")), ("b", SqlType.array(SqlType.map(SqlType("STRING"), SqlType("DOUBLE"))))]
    )
    assert parse_type(str(t)) == t
    assert t.display() == "STRUCT<A INTEGER, b ARRAY<MAP<VARCHAR(STRING), DOUBLE>>>"
    assert parse_type("decimal(10,2)").to_duckdb() == "DECIMAL(10, 2)"


@pytest.mark.parametrize(
    ("text", "line", "column", "message"),
    [
        ("SELECT * FORM s;", 1, 10, "unexpected 'FORM', expected one of: FROM, ','"),
        (
            "CREATE STREAM s (a INT) WITH (x=1);\nSELECT a,\n  b FROM s WHERE a = ;",
            3,
            22,
            "unexpected ';', expected an expression",
        ),
        ("SELECT a FROM", 1, 14, "unexpected end of input, expected an identifier"),
        ("SELECT a FROM s WINDOW TUMBLING (SIZE 5 FOO)", 1, 41, "unknown time unit 'FOO'"),
        ("SELECT # FROM s", 1, 8, "unexpected character '#'"),
        ("CREATE STREAM s (a INTX)", 1, 20, "unknown type 'INTX'"),
    ],
)
def test_syntax_errors(text: str, line: int, column: int, message: str) -> None:
    with pytest.raises(SqlError) as info:
        parse(text)
    err = info.value
    assert (err.line, err.column) == (line, column)
    assert message in err.message
    rendered = str(err).splitlines()
    assert rendered[0].startswith(f"line {line}, column {column}: ")
    assert rendered[2].index("^") - 2 == column - 1


def test_caret_points_at_token_in_later_statement() -> None:
    text = "SHOW STREAMS;\n\nSELECT x\n  FROM s WHERE x >;"
    with pytest.raises(SqlError) as info:
        parse(text)
    assert (info.value.line, info.value.column) == (4, 19)
    assert str(info.value).splitlines()[1:] == ["    FROM s WHERE x >;", "                    ^"]


def test_create_and_drop_monitor() -> None:
    create, drop, again = parse(
        "CREATE MONITOR IF NOT EXISTS fraud WITH (MODEL='fraud', PREDICTIONS='scores', LABELS='truth', KEY='Id',\n"
        "  WITHIN='30 SECONDS', PSI=0.3);\nDROP MONITOR fraud; drop monitor if exists other"
    )
    assert isinstance(create, ast.CreateMonitor) and create.name == "FRAUD" and create.if_not_exists
    assert create.properties == {"MODEL": "fraud", "PREDICTIONS": "scores", "LABELS": "truth", "KEY": "Id",
                                 "WITHIN": "30 SECONDS", "PSI": 0.3}  # fmt: skip
    assert isinstance(drop, ast.DropMonitor) and drop.name == "FRAUD" and not drop.if_exists and drop.pos.line == 3
    assert isinstance(again, ast.DropMonitor) and again.if_exists
    # not reserved: a column or stream may still be called monitor
    select = parse_statement("SELECT monitor FROM monitor")
    assert isinstance(select, ast.SelectStatement)
    with pytest.raises(SqlError):
        parse_statement("CREATE MONITOR fraud")  # its properties are the definition


def test_the_engine_leaves_monitors_to_a_session() -> None:
    from streamml.sql import SqlEngine

    with pytest.raises(SqlError) as refused:
        SqlEngine().execute("SHOW STREAMS;\n  DROP MONITOR fraud;")
    assert refused.value.line == 2 and refused.value.column == 3 and "session" in refused.value.message
