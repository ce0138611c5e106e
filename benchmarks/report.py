"""Writing benchmark results into docs/benchmarks.md: one section per benchmark, replaced on each run."""

from __future__ import annotations

import os
import platform
import statistics
import subprocess
from collections.abc import Sequence
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path

DOC = Path(__file__).resolve().parents[1] / "docs" / "benchmarks.md"
_PREAMBLE = (
    "# Benchmarks\n\nEvery number here comes from a script in `benchmarks/`, run side by side with its reference "
    "in one run. Machines are noisy: read the ratios and medians.\n"
)


def machine() -> str:
    """One line naming the machine and the versions that matter."""
    versions = ", ".join(
        f"{p} {_version(p)}" for p in ("confluent-kafka", "pyarrow", "polars", "duckdb", "onnxruntime")
    )
    java = subprocess.run(["java", "-version"], capture_output=True, text=True, check=False).stderr.split("\n")[0]
    return (
        f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}, "
        f"{versions}; {java.strip()}"
    )


def _version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "-"


def median(values: Sequence[float]) -> float:
    return statistics.median(values)


def table(header: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "| " + " | ".join("---" for _ in header) + " |"]
    lines += ["| " + " | ".join(_cell(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def _cell(value: object) -> str:
    if isinstance(value, float):
        return f"{value:,.0f}" if abs(value) >= 100 else f"{value:.2f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def write_section(name: str, title: str, body: str, command: str) -> None:
    """Replace (or append) the section ``name`` of docs/benchmarks.md."""
    start, end = f"<!-- {name}:start -->", f"<!-- {name}:end -->"
    stamp = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    section = f"{start}\n## {title}\n\nMeasured {stamp} with `{command}` on {machine()}.\n\n{body.strip()}\n{end}"
    text = (
        DOC.read_text()
        if DOC.exists()
        else "# Benchmarks\n\nEvery number here comes from a script in `benchmarks/`, run side by side with its reference in one run. Machines are noisy: read the ratios.\n"
    )
    if start in text and end in text:
        before, rest = text.split(start, 1)
        after = rest.split(end, 1)[1]
        text = before + section + after
    else:
        text = text.rstrip() + "\n\n" + section + "\n"
    DOC.parent.mkdir(parents=True, exist_ok=True)
    DOC.write_text(text)


def replace_rows(name: str, rows: Sequence[Sequence[str]], stages: str, command: str) -> None:
    """In section ``name`` of docs/benchmarks.md, replace the table rows whose first cell matches one of
    ``rows``, and the stage table (the table after them whose header starts ``| stage``), leaving the rest of
    the section as it is; a note under the stage table says when and how those rows were measured."""
    start, end = f"<!-- {name}:start -->", f"<!-- {name}:end -->"
    text = DOC.read_text()
    if start not in text or end not in text:
        raise SystemExit(f"{DOC} has no section '{name}': run the whole benchmark once first")
    before, rest = text.split(start, 1)
    section, after = rest.split(end, 1)
    by_label = {str(row[0]): "| " + " | ".join(str(c) for c in row) + " |" for row in rows}
    lines = [by_label.get(line.split("|")[1].strip(), line) if line.startswith("| ") else line
             for line in section.split("\n")]  # fmt: skip
    stamp = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    note = f"Latency rows and stage table measured {stamp} with `{command.strip()}`."
    block = stages + "\n\n" + note
    body = "\n".join(lines)
    if "| stage" in body:  # the stage table and its note, up to the next blank line after the note
        head, tail = body.split("| stage", 1)
        tail = tail.split("\n\n", 1)[1] if "\n\n" in tail else ""
        if tail.startswith("Latency rows and stage table measured"):
            tail = tail.split("\n\n", 1)[1] if "\n\n" in tail else ""
        body = head + block + "\n\n" + tail
    else:  # after the pipeline table
        head, tail = body.split("\n\n| target", 1) if "\n\n| target" in body else (body, "")
        body = head + "\n\n" + block + ("\n\n| target" + tail if tail else "")
    DOC.write_text(before + start + body + end + after)
