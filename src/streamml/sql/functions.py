"""Built-in scalar and aggregate functions with ksqlDB semantics, compiled to DuckDB SQL.

A scalar function turns its compiled arguments (:class:`Typed`) into one compiled expression; helpers that
need more than one line of SQL are DuckDB macros installed on every connection (:data:`MACROS`).
Aggregates are split into mergeable partial states so that a batch's partial result can be merged into
per-key state (see :mod:`streamml.sql.aggregate`).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from typing import Any

from streamml.errors import SqlError
from streamml.sql.types import BIGINT, DOUBLE, INTEGER, NULL, STRING, SqlType, common_type


class _NoValue:
    def __repr__(self) -> str:
        return "<not constant>"


NOT_CONSTANT: Any = _NoValue()


@dataclass(frozen=True, slots=True)
class Typed:
    """A compiled expression: DuckDB SQL text, its SQL type and, for literals, the constant value."""

    sql: str
    type: SqlType
    value: Any = NOT_CONSTANT

    @property
    def is_constant(self) -> bool:
        return self.value is not NOT_CONSTANT


def sql_string(value: str) -> str:
    """A DuckDB string literal."""
    return "'" + value.replace("'", "''") + "'"


_MASK = (
    "regexp_replace(regexp_replace(regexp_replace(regexp_replace(s, '\\p{Lu}', 'X', 'g'), "
    "'\\p{Ll}', 'x', 'g'), '\\p{Nd}', 'n', 'g'), '[^Xxn]', '-', 'g')"
)
#: Macros installed on every connection that runs compiled SQL.
MACROS: tuple[str, ...] = (
    f"CREATE OR REPLACE MACRO ksql_mask(s) AS {_MASK}",
    "CREATE OR REPLACE MACRO ksql_mask_left(s, n) AS "
    "ksql_mask(left(s, greatest(n, 0)::BIGINT)) || substring(s, greatest(n, 0)::BIGINT + 1)",
    "CREATE OR REPLACE MACRO ksql_mask_right(s, n) AS "
    "left(s, greatest(length(s) - greatest(n, 0), 0)::BIGINT) "
    "|| ksql_mask(right(s, least(greatest(n, 0), length(s))::BIGINT))",
    "CREATE OR REPLACE MACRO ksql_mask_keep_left(s, n) AS "
    "left(s, greatest(n, 0)::BIGINT) || ksql_mask(substring(s, greatest(n, 0)::BIGINT + 1))",
    "CREATE OR REPLACE MACRO ksql_mask_keep_right(s, n) AS "
    "ksql_mask(left(s, greatest(length(s) - greatest(n, 0), 0)::BIGINT)) "
    "|| right(s, least(greatest(n, 0), length(s))::BIGINT)",
)


@dataclass(frozen=True)
class ScalarFunction:
    """A built-in scalar function: ``compile`` gets the compiled arguments and returns the call."""

    name: str
    signature: str
    description: str
    min_args: int
    max_args: int | None
    compile: Callable[[list[Typed]], Typed]


@dataclass(frozen=True)
class Partial:
    """One column of an aggregate's state: batch SQL over argument ``{x}``, merge SQL over ``{s}``/``{e}``."""

    batch: str
    merge: str
    type: SqlType
    #: SQL taking state ``{e}`` back out of ``{s}`` (a table row changed or deleted); None: not undoable
    undo: str | None = None


@dataclass(frozen=True)
class AggregateFunction:
    """An aggregate split into partial state columns and a final expression over them (``{p0}``, ...)."""

    name: str
    signature: str
    description: str
    partials: Callable[[SqlType], list[Partial]]
    final: str
    result_type: Callable[[SqlType], SqlType]
    star: bool = False


# ---- scalar functions -----------------------------------------------------------------------------------


def _require(args: list[Typed], index: int, check: Callable[[SqlType], bool], what: str, fn: str) -> None:
    if not check(args[index].type):
        raise SqlError(f"{fn}: argument {index + 1} must be {what}, got {args[index].type}")


def _string_fn(
    name: str, template: str, returns: SqlType = STRING, int_args: int = 0
) -> Callable[[list[Typed]], Typed]:
    def compile_(args: list[Typed]) -> Typed:
        _require(args, 0, lambda t: t.is_string, "a STRING", name)
        for i in range(1, 1 + int_args):
            if i < len(args):
                _require(args, i, lambda t: t.is_integral or t.name == "NULL", "an INTEGER", name)
        return Typed(template.format(*(a.sql for a in args)), returns)

    return compile_


def _numeric_fn(name: str, template: str, returns: SqlType | None = None) -> Callable[[list[Typed]], Typed]:
    def compile_(args: list[Typed]) -> Typed:
        _require(args, 0, lambda t: t.is_numeric, "numeric", name)
        result = returns or (args[0].type if args[0].type.name != "NULL" else DOUBLE)
        return Typed(f"CAST({template.format(*(a.sql for a in args))} AS {result.to_duckdb()})", result)

    return compile_


def same_type_call(name: str, function: str = "coalesce") -> Callable[[list[Typed]], Typed]:
    """A function of arguments that share one type (``COALESCE``, ``GREATEST``): DuckDB's ``function``."""

    def compile_(args: list[Typed]) -> Typed:
        result = common_type([a.type for a in args])
        if result is None:
            raise SqlError(f"{name}: arguments have incompatible types: " + ", ".join(str(a.type) for a in args))
        return Typed(f"{function}({', '.join(a.sql for a in args)})", result)

    return compile_


def _round(args: list[Typed]) -> Typed:
    _require(args, 0, lambda t: t.is_numeric, "numeric", "ROUND")
    if len(args) == 1:
        if args[0].type.is_integral:
            return args[0]
        return Typed(f"CAST(round({args[0].sql}) AS BIGINT)", BIGINT)
    return Typed(f"round({args[0].sql}, {args[1].sql})", args[0].type if args[0].type.name != "NULL" else DOUBLE)


def _concat(args: list[Typed]) -> Typed:
    return Typed(f"concat({', '.join(a.sql for a in args)})", STRING)


def constant_string(args: list[Typed], index: int, fn: str) -> str:
    if not args[index].is_constant or not isinstance(args[index].value, str):
        raise SqlError(f"{fn}: argument {index + 1} (the format) must be a string literal")
    return str(args[index].value)


_JAVA_FIELDS = {
    "yyyy": "%Y",
    "uuuu": "%Y",
    "yy": "%y",
    "MMMM": "%B",
    "MMM": "%b",
    "MM": "%m",
    "M": "%-m",
    "dd": "%d",
    "d": "%-d",
    "HH": "%H",
    "H": "%-H",
    "hh": "%I",
    "h": "%-I",
    "mm": "%M",
    "m": "%-M",
    "ss": "%S",
    "s": "%-S",
    "SSS": "%g",
    "SSSSSS": "%f",
    "SSSSSSSSS": "%n",
    "a": "%p",
    "EEEE": "%A",
    "EEE": "%a",
    "E": "%a",
    "DDD": "%j",
    "Z": "%z",
    "XXX": "%z",
    "X": "%z",
    "z": "%Z",
}


def java_to_strftime(pattern: str) -> str:
    """Translate a Java ``DateTimeFormatter`` pattern (``yyyy-MM-dd HH:mm:ss.SSS``) to strftime."""
    out: list[str] = []
    for run in re.finditer(r"'(?:[^']|'')*'|([A-Za-z])\1*|[^A-Za-z']+", pattern):
        text = run.group(0)
        if text.startswith("'"):
            out.append(text[1:-1].replace("''", "'").replace("%", "%%") if text != "''" else "'")
        elif text[0].isalpha():
            code = _JAVA_FIELDS.get(text)
            if code is None:
                raise SqlError(f"unsupported date/time pattern field '{text}' in '{pattern}'")
            out.append(code)
        else:
            out.append(text.replace("%", "%%"))
    return "".join(out)


def parse_timestamp_sql(text: str, pattern: str) -> str:
    """SQL parsing ``text`` with Java pattern ``pattern`` into a timestamp (NULL when it does not match)."""
    if re.search(r"X+$", pattern):  # Java's X offsets read a trailing 'Z' as UTC; strptime's %z does not
        text = f"regexp_replace({text}, 'Z$', '+00:00')"
    return f"try_strptime({text}, {sql_string(java_to_strftime(pattern))})"


def timestamp_text_sql(ts: str, pattern: str, zone: str | None) -> str:
    """SQL formatting TIMESTAMP ``ts`` with Java pattern ``pattern``, in UTC or in time zone ``zone`` (SQL)."""
    if zone is not None:
        ts = f"timezone({zone}, CAST({ts} AS TIMESTAMPTZ))"
    return f"strftime({ts}, {sql_string(java_to_strftime(pattern))})"


def _timestamptostring(args: list[Typed]) -> Typed:
    _require(
        args, 0, lambda t: t.is_integral or t.name in ("TIMESTAMP", "NULL"), "BIGINT milliseconds", "TIMESTAMPTOSTRING"
    )
    ts = f"epoch_ms(CAST({args[0].sql} AS BIGINT))" if args[0].type.name != "TIMESTAMP" else args[0].sql
    pattern = constant_string(args, 1, "TIMESTAMPTOSTRING")
    return Typed(timestamp_text_sql(ts, pattern, args[2].sql if len(args) == 3 else None), STRING)


def _stringtotimestamp(args: list[Typed]) -> Typed:
    _require(args, 0, lambda t: t.is_string, "a STRING", "STRINGTOTIMESTAMP")
    ts = parse_timestamp_sql(args[0].sql, constant_string(args, 1, "STRINGTOTIMESTAMP"))
    if len(args) == 3:
        ts = f"timezone({args[2].sql}, CAST({ts} AS TIMESTAMP))"
    return Typed(f"epoch_ms({ts})", BIGINT)


def _substring(args: list[Typed]) -> Typed:
    _require(args, 0, lambda t: t.is_string, "a STRING", "SUBSTRING")
    parts = ", ".join(f"CAST({a.sql} AS BIGINT)" for a in args[1:])
    return Typed(f"substring({args[0].sql}, {parts})", STRING)


def _scalars() -> dict[str, ScalarFunction]:
    fns = [
        ScalarFunction(
            "MASK",
            "MASK(STRING)",
            "Masks letters and digits: A->X, a->x, 1->n, other->-.",
            1,
            1,
            _string_fn("MASK", "ksql_mask({0})"),
        ),
        ScalarFunction(
            "MASK_LEFT",
            "MASK_LEFT(STRING, INT)",
            "Masks the first n characters.",
            2,
            2,
            _string_fn("MASK_LEFT", "ksql_mask_left({0}, {1})", int_args=1),
        ),
        ScalarFunction(
            "MASK_RIGHT",
            "MASK_RIGHT(STRING, INT)",
            "Masks the last n characters.",
            2,
            2,
            _string_fn("MASK_RIGHT", "ksql_mask_right({0}, {1})", int_args=1),
        ),
        ScalarFunction(
            "MASK_KEEP_LEFT",
            "MASK_KEEP_LEFT(STRING, INT)",
            "Masks all but the first n characters.",
            2,
            2,
            _string_fn("MASK_KEEP_LEFT", "ksql_mask_keep_left({0}, {1})", int_args=1),
        ),
        ScalarFunction(
            "MASK_KEEP_RIGHT",
            "MASK_KEEP_RIGHT(STRING, INT)",
            "Masks all but the last n characters.",
            2,
            2,
            _string_fn("MASK_KEEP_RIGHT", "ksql_mask_keep_right({0}, {1})", int_args=1),
        ),
        ScalarFunction(
            "IFNULL",
            "IFNULL(T, T)",
            "The first argument, or the second when it is NULL.",
            2,
            2,
            same_type_call("IFNULL"),
        ),
        ScalarFunction(
            "COALESCE", "COALESCE(T, ...)", "The first argument that is not NULL.", 1, None, same_type_call("COALESCE")
        ),
        ScalarFunction("UCASE", "UCASE(STRING)", "Upper case.", 1, 1, _string_fn("UCASE", "upper({0})")),
        ScalarFunction("LCASE", "LCASE(STRING)", "Lower case.", 1, 1, _string_fn("LCASE", "lower({0})")),
        ScalarFunction("CONCAT", "CONCAT(STRING, ...)", "Concatenates strings; NULLs are skipped.", 1, None, _concat),
        ScalarFunction(
            "SUBSTRING", "SUBSTRING(STRING, INT[, INT])", "Substring from a 1-based position.", 2, 3, _substring
        ),
        ScalarFunction(
            "LEN",
            "LEN(STRING)",
            "Length in characters.",
            1,
            1,
            _string_fn("LEN", "CAST(length({0}) AS INTEGER)", INTEGER),
        ),
        ScalarFunction(
            "TRIM", "TRIM(STRING)", "Removes leading and trailing spaces.", 1, 1, _string_fn("TRIM", "trim({0})")
        ),
        ScalarFunction("ABS", "ABS(NUMBER)", "Absolute value.", 1, 1, _numeric_fn("ABS", "abs({0})")),
        ScalarFunction("ROUND", "ROUND(NUMBER[, INT])", "Rounds half away from zero.", 1, 2, _round),
        ScalarFunction(
            "FLOOR", "FLOOR(NUMBER)", "Largest integral value not above x.", 1, 1, _numeric_fn("FLOOR", "floor({0})")
        ),
        ScalarFunction(
            "CEIL", "CEIL(NUMBER)", "Smallest integral value not below x.", 1, 1, _numeric_fn("CEIL", "ceil({0})")
        ),
        ScalarFunction(
            "SQRT",
            "SQRT(NUMBER)",
            "Square root (NULL for negative input).",
            1,
            1,
            _numeric_fn("SQRT", "CASE WHEN {0} < 0 THEN NULL ELSE sqrt({0}) END", DOUBLE),
        ),
        ScalarFunction("EXP", "EXP(NUMBER)", "e to the power x.", 1, 1, _numeric_fn("EXP", "exp({0})", DOUBLE)),
        ScalarFunction(
            "LN",
            "LN(NUMBER)",
            "Natural logarithm (NULL for x <= 0).",
            1,
            1,
            _numeric_fn("LN", "CASE WHEN {0} <= 0 THEN NULL ELSE ln({0}) END", DOUBLE),
        ),
        ScalarFunction(
            "TIMESTAMPTOSTRING",
            "TIMESTAMPTOSTRING(BIGINT, STRING[, STRING])",
            "Formats epoch milliseconds with a Java pattern, in UTC or the given time zone.",
            2,
            3,
            _timestamptostring,
        ),
        ScalarFunction(
            "STRINGTOTIMESTAMP",
            "STRINGTOTIMESTAMP(STRING, STRING[, STRING])",
            "Parses a string with a Java pattern into epoch milliseconds (NULL if it does not parse).",
            2,
            3,
            _stringtotimestamp,
        ),
    ]
    return {f.name: f for f in fns}


SCALARS: dict[str, ScalarFunction] = _scalars()
SCALARS["SUBSTR"] = SCALARS["SUBSTRING"]

# the rest of ksqlDB's library is defined over the helpers above
from streamml.sql.library import LIBRARY_MACROS, library  # noqa: E402

SCALARS.update({f.name: f for f in library()})
MACROS += LIBRARY_MACROS


# ---- aggregates -----------------------------------------------------------------------------------------

_NULL_MERGE = "CASE WHEN {s} IS NULL THEN {e} WHEN {e} IS NULL THEN {s} ELSE {op} END"


def _sum_type(t: SqlType) -> SqlType:
    return t if t.name in ("INTEGER", "BIGINT", "DOUBLE", "DECIMAL") else DOUBLE


#: most values COLLECT_LIST keeps per key (ksqlDB's ``ksql.functions.collect_list.limit`` default)
COLLECT_LIMIT = 1000


def _aggregates() -> dict[str, AggregateFunction]:
    count_partials = [Partial("count({x})", "{s} + {e}", BIGINT, "{s} - {e}")]
    minus = "coalesce({s}, 0) - coalesce({e}, 0)"
    aggs = [
        AggregateFunction(
            "COUNT",
            "COUNT(*) | COUNT(col)",
            "Number of rows (or of non-NULL values).",
            lambda t: count_partials,
            "{p0}",
            lambda t: BIGINT,
        ),
        AggregateFunction(
            "SUM",
            "SUM(NUMBER)",
            "Sum of the values.",
            lambda t: [
                Partial(
                    f"CAST(sum({{x}}) AS {_sum_type(t).to_duckdb()})",
                    _NULL_MERGE.replace("{op}", "{s} + {e}"),
                    _sum_type(t),
                    minus,
                )
            ],
            "{p0}",
            _sum_type,
        ),
        AggregateFunction(
            "AVG",
            "AVG(NUMBER)",
            "Average of the values.",
            lambda t: [
                Partial("CAST(sum({x}) AS DOUBLE)", _NULL_MERGE.replace("{op}", "{s} + {e}"), DOUBLE, minus),
                Partial("count({x})", "{s} + {e}", BIGINT, "{s} - {e}"),
            ],
            "CASE WHEN {p1} = 0 THEN NULL ELSE {p0} / {p1} END",
            lambda t: DOUBLE,
        ),
        AggregateFunction(
            "MIN",
            "MIN(T)",
            "Smallest value.",
            lambda t: [Partial("min({x})", "least({s}, {e})", t)],
            "{p0}",
            lambda t: t,
        ),
        AggregateFunction(
            "MAX",
            "MAX(T)",
            "Largest value.",
            lambda t: [Partial("max({x})", "greatest({s}, {e})", t)],
            "{p0}",
            lambda t: t,
        ),
        AggregateFunction(
            "LATEST_BY_OFFSET",
            "LATEST_BY_OFFSET(T)",
            "The value of the latest record (NULLs ignored).",
            lambda t: [
                Partial(
                    "arg_max({x}, __seq) FILTER (WHERE {x} IS NOT NULL)",
                    "CASE WHEN {e1} IS NOT NULL AND ({s1} IS NULL OR {e1} >= {s1}) THEN {e} ELSE {s} END",
                    t,
                ),
                Partial("max(__seq) FILTER (WHERE {x} IS NOT NULL)", "greatest({s}, {e})", BIGINT),
            ],
            "{p0}",
            lambda t: t,
        ),
        AggregateFunction(
            "EARLIEST_BY_OFFSET",
            "EARLIEST_BY_OFFSET(T)",
            "The value of the earliest record (NULLs ignored).",
            lambda t: [
                Partial(
                    "arg_min({x}, __seq) FILTER (WHERE {x} IS NOT NULL)",
                    "CASE WHEN {s1} IS NULL OR ({e1} IS NOT NULL AND {e1} < {s1}) THEN {e} ELSE {s} END",
                    t,
                ),
                Partial("min(__seq) FILTER (WHERE {x} IS NOT NULL)", "least({s}, {e})", BIGINT),
            ],
            "{p0}",
            lambda t: t,
        ),
        AggregateFunction(
            "COUNT_DISTINCT",
            "COUNT_DISTINCT(T)",
            "Number of distinct non-NULL values.",
            lambda t: [
                Partial(
                    "list(DISTINCT {x}) FILTER (WHERE {x} IS NOT NULL)",
                    "list_distinct(list_concat(coalesce({s}, []), coalesce({e}, [])))",
                    SqlType.array(t),
                )
            ],
            "CAST(coalesce(len({p0}), 0) AS BIGINT)",
            lambda t: BIGINT,
        ),
        AggregateFunction(
            "COLLECT_LIST",
            "COLLECT_LIST(T)",
            f"The first {COLLECT_LIMIT} values, in arrival order.",
            lambda t: [
                Partial(
                    f"list_slice(list({{x}} ORDER BY __seq), 1, {COLLECT_LIMIT})",
                    f"list_slice(list_concat(coalesce({{s}}, []), coalesce({{e}}, [])), 1, {COLLECT_LIMIT})",
                    SqlType.array(t),
                )
            ],
            "{p0}",
            SqlType.array,
        ),
    ]
    return {a.name: a for a in aggs}


AGGREGATES: dict[str, AggregateFunction] = _aggregates()


@cache
def by_offset(name: str, n: int, ignore_nulls: bool) -> AggregateFunction:
    """``LATEST_BY_OFFSET(col, n[, ignoreNulls])`` / ``EARLIEST_BY_OFFSET(...)``: the last (first) ``n`` values
    in offset order, as an ARRAY (NULLs skipped unless ``ignore_nulls`` is false)."""
    keep = f"list_slice({{l}}, -{n}, -1)" if name == "LATEST_BY_OFFSET" else f"list_slice({{l}}, 1, {n})"
    values = "list({x} ORDER BY __seq)" + (" FILTER (WHERE {x} IS NOT NULL)" if ignore_nulls else "")
    merged = "list_concat(coalesce({s}, []), coalesce({e}, []))"
    return AggregateFunction(
        name,
        f"{name}(T, INT[, BOOLEAN])",
        f"The {'last' if name.startswith('LATEST') else 'first'} {n} values, in offset order.",
        lambda t: [Partial(keep.replace("{l}", values), keep.replace("{l}", merged), SqlType.array(t))],
        "{p0}",
        SqlType.array,
    )


def describe_function(name: str) -> str:
    """One-paragraph description for ``DESCRIBE FUNCTION``."""
    key = name.upper()
    if key in SCALARS:
        f = SCALARS[key]
        return f"{f.name} (scalar): {f.signature}\n  {f.description}"
    if key in AGGREGATES:
        a = AGGREGATES[key]
        return f"{a.name} (aggregate): {a.signature}\n  {a.description}"
    raise SqlError(f"unknown function '{name}'")


def literal_type(kind: str) -> SqlType:
    """Type of a literal of the given parser kind."""
    return {"string": STRING, "integer": INTEGER, "bigint": BIGINT, "double": DOUBLE, "null": NULL}.get(
        kind, SqlType("BOOLEAN")
    )
