"""The rest of ksqlDB's scalar functions: strings, regular expressions, math, collections, dates and times.

Each function compiles to one DuckDB expression over the whole batch (no Python per row), with ksqlDB's
documented results where DuckDB's differ: 1-based positions and ``0`` for "not found" (``INSTR``), ``NULL``
for an empty padding (``LPAD``), ``NaN`` outside a function's domain (``ACOS``, ``LOG``), NULLs kept and first
appearances ordered (``ARRAY_DISTINCT``), ``null`` printed for NULL elements (``ARRAY_JOIN``). The older
ones (``MASK``, ``SUBSTRING``, ``ROUND``, ...) are in :mod:`streamml.sql.functions`, which registers these.
"""

from __future__ import annotations

from collections.abc import Callable

from streamml.errors import SqlError
from streamml.sql.functions import (
    ScalarFunction,
    Typed,
    constant_string,
    parse_timestamp_sql,
    same_type_call,
    timestamp_text_sql,
)
from streamml.sql.types import BIGINT, BOOLEAN, DATE, DOUBLE, INTEGER, NULL, STRING, TIMESTAMP, SqlType

_NAN, _NEG_INF = "CAST('NaN' AS DOUBLE)", "CAST('-Infinity' AS DOUBLE)"
_EPOCH = "DATE '1970-01-01'"

#: DuckDB macros the functions below call (installed with :data:`streamml.sql.functions.MACROS`)
LIBRARY_MACROS: tuple[str, ...] = (
    # INSTR: the occ-th match at or after pos (1-based), or searching backwards from the end for pos < 0
    "CREATE OR REPLACE MACRO ksql_instr(s, sub, pos, occ) AS CASE WHEN s IS NULL OR sub IS NULL THEN 0 "
    "ELSE coalesce(list_filter(CASE WHEN pos < 0 THEN range(length(s) + pos + 1, 0, -1) "
    "ELSE range(greatest(pos, 1), length(s) + 1) END, lambda i: substring(s, i, length(sub)) = sub)[occ], 0) END",
    "CREATE OR REPLACE MACRO ksql_distinct(a) AS list_filter(a, lambda x, i: list_position(a, x) = i)",
)


Check = tuple[Callable[[SqlType], bool], str]


def _args(name: str, args: list[Typed], *checks: Check) -> list[str]:
    """The arguments' SQL after checking argument ``i`` with ``checks[i]`` (NULL passes every check)."""
    for i, (check, what) in enumerate(checks[: len(args)]):
        if args[i].type.name != "NULL" and not check(args[i].type):
            raise SqlError(f"{name}: argument {i + 1} must be {what}, got {args[i].type}")
    return [a.sql for a in args]


_STR = (lambda t: t.is_string, "a STRING")
_INT = (lambda t: t.is_integral, "an INTEGER")
_NUM = (lambda t: t.is_numeric, "numeric")
_ARRAY = (lambda t: t.name == "ARRAY", "an ARRAY")
_MAP = (lambda t: t.name == "MAP", "a MAP")
_TIME = (lambda t: t.name == "TIMESTAMP", "a TIMESTAMP")
_DATE = (lambda t: t.name == "DATE", "a DATE")
_ANY = (lambda t: True, "any value")


def _fn(name: str, template: str, returns: SqlType, *checks: Check) -> Callable[..., Typed]:
    """A function whose SQL is ``template`` over its arguments ``{0}``, ``{1}``, ..."""

    def compile_(args: list[Typed]) -> Typed:
        return Typed(template.format(*_args(name, args, *checks)), returns)

    return compile_


def _double(name: str, template: str, arity: int = 1) -> Callable[..., Typed]:
    """A math function of DOUBLE arguments returning DOUBLE."""

    def compile_(args: list[Typed]) -> Typed:
        values = [f"CAST({a} AS DOUBLE)" for a in _args(name, args, *[_NUM] * arity)]
        return Typed(f"CAST(({template.format(*values)}) AS DOUBLE)", DOUBLE)

    return compile_


def _element(a: Typed) -> SqlType:
    return a.type.args[0] if a.type.name == "ARRAY" else NULL


# ---- strings --------------------------------------------------------------------------------------------
def _instr(args: list[Typed]) -> Typed:
    s, sub, *rest = _args("INSTR", args, _STR, _STR, _INT, _INT)
    pos, occ = [*rest, "1", "1"][:2]
    return Typed(f"CAST(ksql_instr({s}, {sub}, CAST({pos} AS BIGINT), CAST({occ} AS BIGINT)) AS INTEGER)", INTEGER)


def _pad(name: str) -> Callable[..., Typed]:
    def compile_(args: list[Typed]) -> Typed:
        s, n, pad = _args(name, args, _STR, _INT, _STR)
        call = f"{name.lower()}({s}, CAST({n} AS INTEGER), {pad})"
        return Typed(f"CASE WHEN {pad} = '' OR {n} < 0 THEN NULL ELSE {call} END", STRING)

    return compile_


def _concat_ws(args: list[Typed]) -> Typed:
    parts = [a.sql if a.type.is_string else f"CAST({a.sql} AS VARCHAR)" for a in args]
    return Typed(f"concat_ws({', '.join(parts)})", STRING)


def _regexp_extract(all_: bool) -> Callable[..., Typed]:
    name = "REGEXP_EXTRACT_ALL" if all_ else "REGEXP_EXTRACT"

    def compile_(args: list[Typed]) -> Typed:
        pattern, text, *group = _args(name, args, _STR, _STR, _INT)
        if group and not args[2].is_constant:
            raise SqlError(f"{name}: the group (argument 3) must be a number literal")
        g = group[0] if group else "0"
        if all_:
            return Typed(f"regexp_extract_all({text}, {pattern}, {g})", SqlType.array(STRING))
        return Typed(
            f"CASE WHEN regexp_matches({text}, {pattern}) THEN regexp_extract({text}, {pattern}, {g}) END", STRING
        )

    return compile_


def _chr(args: list[Typed]) -> Typed:
    (code,) = _args("CHR", args, _INT)
    return Typed(f"CASE WHEN {code} BETWEEN 0 AND 1114111 THEN chr(CAST({code} AS INTEGER)) END", STRING)


# ---- math -----------------------------------------------------------------------------------------------
def _log(args: list[Typed]) -> Typed:
    values = [f"CAST({a} AS DOUBLE)" for a in _args("LOG", args, _NUM, _NUM)]
    x = values[-1]
    if len(values) == 1:
        return Typed(f"CASE WHEN {x} < 0 THEN {_NAN} WHEN {x} = 0 THEN {_NEG_INF} ELSE log10({x}) END", DOUBLE)
    base = values[0]
    return Typed(
        f"CASE WHEN {base} <= 0 OR {base} = 1 OR {x} < 0 THEN {_NAN} WHEN {x} = 0 THEN {_NEG_INF} "
        f"ELSE ln({x}) / ln({base}) END",
        DOUBLE,
    )


def _trunc(args: list[Typed]) -> Typed:
    x, *digits = _args("TRUNC", args, _NUM, _INT)
    if digits:
        scale = f"pow(10, CAST({digits[0]} AS DOUBLE))"
        return Typed(f"CAST(trunc(CAST({x} AS DOUBLE) * {scale}) / {scale} AS DOUBLE)", DOUBLE)
    if args[0].type.name == "DECIMAL":
        t = args[0].type
        whole = SqlType.decimal(max(t.precision - t.scale, 1), 0)
        return Typed(f"CAST(trunc({x}) AS {whole.to_duckdb()})", whole)
    return Typed(f"CAST(trunc({x}) AS BIGINT)", BIGINT)


def _nullif(args: list[Typed]) -> Typed:
    return Typed(f"nullif({args[0].sql}, {args[1].sql})", args[0].type)


# ---- collections ----------------------------------------------------------------------------------------
def _same_array(name: str, template: str, *checks: Check) -> Callable[..., Typed]:
    """A function returning an array of its first argument's type."""

    def compile_(args: list[Typed]) -> Typed:
        return Typed(template.format(*_args(name, args, _ARRAY, *checks)), args[0].type)

    return compile_


def _array_extreme(name: str) -> Callable[..., Typed]:
    def compile_(args: list[Typed]) -> Typed:
        (a,) = _args(name, args, _ARRAY)
        return Typed(f"list_{name[-3:].lower()}({a})", _element(args[0]))

    return compile_


def _array_sort(args: list[Typed]) -> Typed:
    a, *order = _args("ARRAY_SORT", args, _ARRAY, _STR)
    direction = "ASC"
    if order:
        direction = constant_string(args, 1, "ARRAY_SORT").upper()
        if direction not in ("ASC", "DESC"):
            raise SqlError("ARRAY_SORT: the order (argument 2) must be 'ASC' or 'DESC'")
    return Typed(f"list_sort({a}, '{direction}', 'NULLS LAST')", args[0].type)


def _array_join(args: list[Typed]) -> Typed:
    a, *delimiter = _args("ARRAY_JOIN", args, _ARRAY, _STR)
    sep = f"coalesce({delimiter[0]}, '')" if delimiter else "','"
    return Typed(f"array_to_string(list_transform({a}, lambda x: coalesce(CAST(x AS VARCHAR), 'null')), {sep})", STRING)


def _set_op(name: str, keep: str) -> Callable[..., Typed]:
    """ARRAY_UNION/INTERSECT/EXCEPT: distinct elements in first-seen order; NULL when either side is."""

    def compile_(args: list[Typed]) -> Typed:
        a, b = _args(name, args, _ARRAY, _ARRAY)
        body = keep.format(a=a, b=b)
        return Typed(f"CASE WHEN {a} IS NULL OR {b} IS NULL THEN NULL ELSE ksql_distinct({body}) END", args[0].type)

    return compile_


def _as_map(args: list[Typed]) -> Typed:
    keys, values = _args("AS_MAP", args, _ARRAY, _ARRAY)
    return Typed(f"map({keys}, {values})", SqlType.map(_element(args[0]), _element(args[1])))


def _map_part(name: str) -> Callable[..., Typed]:
    def compile_(args: list[Typed]) -> Typed:
        (m,) = _args(name, args, _MAP)
        t = args[0].type
        element = (t.args[0] if name == "MAP_KEYS" else t.args[1]) if t.name == "MAP" else NULL
        return Typed(f"{name.lower()}({m})", SqlType.array(element))

    return compile_


# ---- dates and times ------------------------------------------------------------------------------------
def _unix_timestamp(args: list[Typed]) -> Typed:
    if not args:
        return Typed("CAST(epoch_ms(now()) AS BIGINT)", BIGINT)
    (ts,) = _args("UNIX_TIMESTAMP", args, _TIME)
    return Typed(f"CAST(epoch_ms(CAST({ts} AS TIMESTAMP)) AS BIGINT)", BIGINT)


def _unix_date(args: list[Typed]) -> Typed:
    (day,) = _args("UNIX_DATE", args, _DATE) or ["current_date"]
    return Typed(f"CAST({day} - {_EPOCH} AS INTEGER)", INTEGER)


def _from_unixtime(args: list[Typed]) -> Typed:
    (ms,) = _args("FROM_UNIXTIME", args, _INT)
    return Typed(f"CAST(epoch_ms(CAST({ms} AS BIGINT)) AS TIMESTAMP_MS)", TIMESTAMP)


def _parse_timestamp(args: list[Typed]) -> Typed:
    text, _, *zone = _args("PARSE_TIMESTAMP", args, _STR, _STR, _STR)
    ts = parse_timestamp_sql(text, constant_string(args, 1, "PARSE_TIMESTAMP"))
    if zone:
        ts = f"timezone({zone[0]}, CAST({ts} AS TIMESTAMP))"
    return Typed(f"CAST(epoch_ms(CAST(epoch_ms({ts}) AS BIGINT)) AS TIMESTAMP_MS)", TIMESTAMP)


def _format_timestamp(args: list[Typed]) -> Typed:
    ts, _, *zone = _args("FORMAT_TIMESTAMP", args, _TIME, _STR, _STR)
    return Typed(
        timestamp_text_sql(ts, constant_string(args, 1, "FORMAT_TIMESTAMP"), zone[0] if zone else None), STRING
    )


def _parse_date(name: str, days: bool) -> Callable[..., Typed]:
    def compile_(args: list[Typed]) -> Typed:
        text, _ = _args(name, args, _STR, _STR)
        day = f"CAST({parse_timestamp_sql(text, constant_string(args, 1, name))} AS DATE)"
        return Typed(f"CAST({day} - {_EPOCH} AS INTEGER)", INTEGER) if days else Typed(day, DATE)

    return compile_


def _format_date(name: str, days: bool) -> Callable[..., Typed]:
    def compile_(args: list[Typed]) -> Typed:
        day, _ = _args(name, args, _INT if days else _DATE, _STR)
        value = f"({_EPOCH} + CAST({day} AS INTEGER))" if days else day
        return Typed(timestamp_text_sql(f"CAST({value} AS TIMESTAMP)", constant_string(args, 1, name), None), STRING)

    return compile_


def _convert_tz(args: list[Typed]) -> Typed:
    ts, source, target = _args("CONVERT_TZ", args, _TIME, _STR, _STR)
    return Typed(f"CAST(timezone({target}, timezone({source}, CAST({ts} AS TIMESTAMP))) AS TIMESTAMP_MS)", TIMESTAMP)


def library() -> list[ScalarFunction]:
    """The functions, each with its ksqlDB signature and a one-line description."""
    f = ScalarFunction
    return [
        f("INSTR", "INSTR(STRING, STRING[, INT[, INT]])", "1-based position of the n-th match (0: none).", 2, 4,
          _instr),
        f("LPAD", "LPAD(STRING, INT, STRING)", "Pads on the left to a length (or truncates).", 3, 3, _pad("LPAD")),
        f("RPAD", "RPAD(STRING, INT, STRING)", "Pads on the right to a length (or truncates).", 3, 3, _pad("RPAD")),
        f("REPLACE", "REPLACE(STRING, STRING, STRING)", "Replaces every occurrence.", 3, 3,
          _fn("REPLACE", "replace({0}, {1}, {2})", STRING, _STR, _STR, _STR)),
        f("CONCAT_WS", "CONCAT_WS(STRING, T, ...)", "Joins with a separator, skipping NULLs.", 2, None, _concat_ws),
        f("INITCAP", "INITCAP(STRING)", "Capitalises each word.", 1, 1, _fn(
            "INITCAP", "array_to_string(list_transform(string_split({0}, ' '), "
            "lambda w: upper(w[1]) || lower(w[2:])), ' ')", STRING, _STR)),
        f("SPLIT", "SPLIT(STRING, STRING)", "Splits at each delimiter ('' splits characters).", 2, 2,
          _fn("SPLIT", "string_split({0}, {1})", SqlType.array(STRING), _STR, _STR)),
        f("CHR", "CHR(INT)", "The character of a Unicode code point.", 1, 1, _chr),
        f("REGEXP_EXTRACT", "REGEXP_EXTRACT(STRING, STRING[, INT])", "First match of a pattern (or of a group).",
          2, 3, _regexp_extract(False)),
        f("REGEXP_EXTRACT_ALL", "REGEXP_EXTRACT_ALL(STRING, STRING[, INT])", "Every match of a pattern.", 2, 3,
          _regexp_extract(True)),
        f("REGEXP_REPLACE", "REGEXP_REPLACE(STRING, STRING, STRING)", "Replaces every match of a pattern.", 3, 3,
          _fn("REGEXP_REPLACE", "regexp_replace({0}, {1}, {2}, 'g')", STRING, _STR, _STR, _STR)),
        f("REGEXP_SPLIT_TO_ARRAY", "REGEXP_SPLIT_TO_ARRAY(STRING, STRING)", "Splits at each match of a pattern.", 2,
          2, _fn("REGEXP_SPLIT_TO_ARRAY", "regexp_split_to_array({0}, {1})", SqlType.array(STRING), _STR, _STR)),
        f("UUID", "UUID()", "A random (version 4) UUID.", 0, 0, _fn("UUID", "CAST(uuid() AS VARCHAR)", STRING)),
        f("SIGN", "SIGN(NUMBER)", "-1, 0 or 1.", 1, 1, _fn("SIGN", "CAST(sign({0}) AS INTEGER)", INTEGER, _NUM)),
        f("LOG", "LOG([DOUBLE base,] DOUBLE)", "Logarithm, base 10 unless given.", 1, 2, _log),
        f("POWER", "POWER(DOUBLE, DOUBLE)", "base to the power exponent.", 2, 2, _double("POWER", "pow({0}, {1})", 2)),
        f("TRUNC", "TRUNC(NUMBER[, INT])", "Rounds toward zero.", 1, 2, _trunc),
        f("CBRT", "CBRT(DOUBLE)", "Cube root.", 1, 1, _double("CBRT", "cbrt({0})")),
        f("ACOS", "ACOS(DOUBLE)", "Arc cosine (NaN outside [-1, 1]).", 1, 1,
          _double("ACOS", f"CASE WHEN abs({{0}}) > 1 THEN {_NAN} ELSE acos({{0}}) END")),
        f("ASIN", "ASIN(DOUBLE)", "Arc sine (NaN outside [-1, 1]).", 1, 1,
          _double("ASIN", f"CASE WHEN abs({{0}}) > 1 THEN {_NAN} ELSE asin({{0}}) END")),
        f("ATAN", "ATAN(DOUBLE)", "Arc tangent.", 1, 1, _double("ATAN", "atan({0})")),
        f("ATAN2", "ATAN2(DOUBLE, DOUBLE)", "Angle of (x, y) from (y, x).", 2, 2,
          _double("ATAN2", "atan2({0}, {1})", 2)),
        f("COS", "COS(DOUBLE)", "Cosine.", 1, 1, _double("COS", "cos({0})")),
        f("COSH", "COSH(DOUBLE)", "Hyperbolic cosine.", 1, 1, _double("COSH", "cosh({0})")),
        f("COT", "COT(DOUBLE)", "Cotangent.", 1, 1, _double("COT", "cot({0})")),
        f("SIN", "SIN(DOUBLE)", "Sine.", 1, 1, _double("SIN", "sin({0})")),
        f("SINH", "SINH(DOUBLE)", "Hyperbolic sine.", 1, 1, _double("SINH", "sinh({0})")),
        f("TAN", "TAN(DOUBLE)", "Tangent.", 1, 1, _double("TAN", "tan({0})")),
        f("TANH", "TANH(DOUBLE)", "Hyperbolic tangent.", 1, 1, _double("TANH", "tanh({0})")),
        f("DEGREES", "DEGREES(DOUBLE)", "Radians to degrees.", 1, 1, _double("DEGREES", "degrees({0})")),
        f("RADIANS", "RADIANS(DOUBLE)", "Degrees to radians.", 1, 1, _double("RADIANS", "radians({0})")),
        f("PI", "PI()", "The value of pi.", 0, 0, _fn("PI", "pi()", DOUBLE)),
        f("RANDOM", "RANDOM()", "A random DOUBLE in [0, 1).", 0, 0, _fn("RANDOM", "random()", DOUBLE)),
        f("GREATEST", "GREATEST(T, ...)", "The largest non-NULL argument.", 1, None,
          same_type_call("GREATEST", "greatest")),
        f("LEAST", "LEAST(T, ...)", "The smallest non-NULL argument.", 1, None, same_type_call("LEAST", "least")),
        f("NULLIF", "NULLIF(T, T)", "NULL when both are equal, else the first.", 2, 2, _nullif),
        f("ARRAY_LENGTH", "ARRAY_LENGTH(ARRAY)", "Number of elements.", 1, 1,
          _fn("ARRAY_LENGTH", "CAST(len({0}) AS INTEGER)", INTEGER, _ARRAY)),
        f("ARRAY_CONTAINS", "ARRAY_CONTAINS(ARRAY, T)", "Whether the array holds the value.", 2, 2,
          _fn("ARRAY_CONTAINS", "list_contains({0}, {1})", BOOLEAN, _ARRAY, _ANY)),
        f("ARRAY_DISTINCT", "ARRAY_DISTINCT(ARRAY)", "Distinct elements, first appearances first.", 1, 1,
          _same_array("ARRAY_DISTINCT", "ksql_distinct({0})")),
        f("ARRAY_MAX", "ARRAY_MAX(ARRAY)", "Largest non-NULL element.", 1, 1, _array_extreme("ARRAY_MAX")),
        f("ARRAY_MIN", "ARRAY_MIN(ARRAY)", "Smallest non-NULL element.", 1, 1, _array_extreme("ARRAY_MIN")),
        f("ARRAY_SORT", "ARRAY_SORT(ARRAY[, 'ASC'|'DESC'])", "Sorted, NULLs last.", 1, 2, _array_sort),
        f("ARRAY_JOIN", "ARRAY_JOIN(ARRAY[, STRING])", "Elements as text, joined (',' by default).", 1, 2, _array_join),
        f("ARRAY_REMOVE", "ARRAY_REMOVE(ARRAY, T)", "Without the elements equal to the value.", 2, 2,
          _same_array("ARRAY_REMOVE", "list_filter({0}, lambda x: x IS DISTINCT FROM {1})", _ANY)),
        f("ARRAY_CONCAT", "ARRAY_CONCAT(ARRAY, ARRAY)", "Both arrays, duplicates kept.", 2, 2, _same_array(
            "ARRAY_CONCAT", "CASE WHEN {0} IS NULL THEN {1} WHEN {1} IS NULL THEN {0} ELSE list_concat({0}, {1}) END",
            _ARRAY)),
        f("ARRAY_UNION", "ARRAY_UNION(ARRAY, ARRAY)", "Distinct elements of both.", 2, 2,
          _set_op("ARRAY_UNION", "list_concat({a}, {b})")),
        f("ARRAY_INTERSECT", "ARRAY_INTERSECT(ARRAY, ARRAY)", "Distinct elements in both.", 2, 2,
          _set_op("ARRAY_INTERSECT", "list_filter({a}, lambda x: list_position({b}, x) IS NOT NULL)")),
        f("ARRAY_EXCEPT", "ARRAY_EXCEPT(ARRAY, ARRAY)", "Distinct elements of the first not in the second.", 2, 2,
          _set_op("ARRAY_EXCEPT", "list_filter({a}, lambda x: list_position({b}, x) IS NULL)")),
        f("SLICE", "SLICE(ARRAY, INT, INT)", "Elements from..to, 1-based, both included.", 3, 3,
          _same_array("SLICE", "list_slice({0}, {1}, {2})", _INT, _INT)),
        f("AS_MAP", "AS_MAP(ARRAY, ARRAY)", "A map from keys and values.", 2, 2, _as_map),
        f("MAP_KEYS", "MAP_KEYS(MAP)", "The keys.", 1, 1, _map_part("MAP_KEYS")),
        f("MAP_VALUES", "MAP_VALUES(MAP)", "The values.", 1, 1, _map_part("MAP_VALUES")),
        f("UNIX_TIMESTAMP", "UNIX_TIMESTAMP([TIMESTAMP])", "Epoch milliseconds (now by default).", 0, 1,
          _unix_timestamp),
        f("UNIX_DATE", "UNIX_DATE([DATE])", "Days since 1970-01-01 (today by default).", 0, 1, _unix_date),
        f("FROM_UNIXTIME", "FROM_UNIXTIME(BIGINT)", "Epoch milliseconds as a TIMESTAMP.", 1, 1, _from_unixtime),
        f("PARSE_TIMESTAMP", "PARSE_TIMESTAMP(STRING, STRING[, STRING])", "Text to TIMESTAMP with a Java pattern.",
          2, 3, _parse_timestamp),
        f("FORMAT_TIMESTAMP", "FORMAT_TIMESTAMP(TIMESTAMP, STRING[, STRING])", "TIMESTAMP to text.", 2, 3,
          _format_timestamp),
        f("PARSE_DATE", "PARSE_DATE(STRING, STRING)", "Text to DATE with a Java pattern.", 2, 2,
          _parse_date("PARSE_DATE", days=False)),
        f("FORMAT_DATE", "FORMAT_DATE(DATE, STRING)", "DATE to text.", 2, 2, _format_date("FORMAT_DATE", days=False)),
        f("STRINGTODATE", "STRINGTODATE(STRING, STRING)", "Text to days since 1970-01-01 (deprecated).", 2, 2,
          _parse_date("STRINGTODATE", days=True)),
        f("DATETOSTRING", "DATETOSTRING(INT, STRING)", "Days since 1970-01-01 to text (deprecated).", 2, 2,
          _format_date("DATETOSTRING", days=True)),
        f("CONVERT_TZ", "CONVERT_TZ(TIMESTAMP, STRING, STRING)", "A wall-clock time from one zone to another.", 3, 3,
          _convert_tz),
    ]  # fmt: skip
