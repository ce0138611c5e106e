"""Readable syntax errors: where the parser stopped, what it found, and what it could have taken there
(keywords first, then punctuation; an identifier or expression instead of the dozens of words that start one).
"""

from __future__ import annotations

from lark.exceptions import UnexpectedCharacters, UnexpectedEOF, UnexpectedInput, UnexpectedToken

from streamml.errors import SqlError

_PUNCTUATION = {
    "COMMA": "','",
    "LPAR": "'('",
    "RPAR": "')'",
    "LSQB": "'['",
    "RSQB": "']'",
    "DOT": "'.'",
    "STAR": "'*'",
    "EQ": "'='",
    "NE": "'!='",
    "LT": "'<'",
    "LE": "'<='",
    "GT": "'>'",
    "GE": "'>='",
    "PLUS": "'+'",
    "MINUS": "'-'",
    "SLASH": "'/'",
    "PERCENT": "'%'",
    "ARROW": "'->'",
    "_SEP": "';'",
    "CONCAT_OP": "'||'",
    "STRING": "a string",
    "NUMBER": "a number",
    "IDENT": "an identifier",
    "QUOTED_IDENT": "an identifier",
    "DQUOTED_IDENT": "an identifier",
    "$END": "end of input",
}
_NONRESERVED = frozenset(
    [
        "KEY",
        "TOPIC",
        "SIZE",
        "ADVANCE",
        "GRACE",
        "PERIOD",
        "EXTENDED",
        "FUNCTIONS",
        "TOPICS",
        "QUERIES",
        "STREAMS",
        "TABLES",
        "LIST",
        "CHANGES",
        "FINAL",
        "TUMBLING",
        "HOPPING",
        "SESSION",
        "FUNCTION",
        "REPLACE",
        "MONITOR",
        "DELETE",
        "ROWS",
        "ROW",
        "PRECEDING",
        "CURRENT",
    ]
)
_EXPRESSION_STARTERS = {
    "ARRAY",
    "CASE",
    "CAST",
    "NOT",
    "TRUE",
    "FALSE",
    "NULL",
    "STRING",
    "NUMBER",
    "PLUS",
    "MINUS",
    "LPAR",
}


def syntax_error(exc: UnexpectedInput, text: str) -> SqlError:
    if isinstance(exc, UnexpectedToken):
        token = exc.token
        if token.type == "$END":
            found, line, column = "end of input", *_end_position(text)
        else:
            found, line, column = f"'{token}'", token.line, token.column
        expected = _curate(exc.expected)
    elif isinstance(exc, UnexpectedEOF):
        found, (line, column) = "end of input", _end_position(text)
        expected = _curate(set(exc.expected))
    elif isinstance(exc, UnexpectedCharacters):
        found, line, column = f"character '{text[exc.pos_in_stream or 0]}'", exc.line, exc.column
        expected = _curate(set(exc.allowed or ()))
    else:  # pragma: no cover - lark has no other kinds
        return SqlError(str(exc), statement=text)
    message = f"unexpected {found}"
    if expected:
        message += ", expected " + ("one of: " if len(expected) > 1 else "") + ", ".join(expected)
    return SqlError(message, line=line, column=column, statement=text)


def _end_position(text: str) -> tuple[int, int]:
    lines = text.split("\n")
    return len(lines), len(lines[-1]) + 1


def _curate(expected: set[str]) -> list[str]:
    """Turn lark's terminal names into a short readable list (keywords first, then punctuation)."""
    names = set(expected)
    out: list[str] = []
    idents = {"IDENT", "QUOTED_IDENT", "DQUOTED_IDENT"}
    if names & idents:
        names -= _NONRESERVED  # non-reserved keywords are identifiers too: do not list them separately
    if {"IDENT", "NUMBER", "STRING", "CASE"} <= names:
        out.append("an expression")
        names -= _EXPRESSION_STARTERS | idents
    elif names & idents:
        out.append("an identifier")
        names -= idents
    keywords = sorted(n for n in names if n not in _PUNCTUATION and not n.startswith("__"))
    punctuation = [_PUNCTUATION.get(n, n) for n in sorted(names) if n in _PUNCTUATION or n.startswith("__")]
    return (out + keywords + sorted(set(punctuation), key=punctuation.index))[:12]
