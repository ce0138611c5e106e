"""The benchmark suite: every scenario side by side in alternating rounds, medians, ratios and targets."""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path

from streamml.bench import data, scenarios
from streamml.bench.results import ScenarioResult, Summary, Target
from streamml.config import Settings

log = logging.getLogger(__name__)

PASSTHROUGH, ONE, TWO, LOOP, QUIX, MODEL = "a", "b1", "b2", "c", "d", "e"
LATENCY_EOS, LATENCY_ALO, LATENCY_PASS = "lat-eos", "lat-alo", "lat-pass"
LATENCY = (LATENCY_PASS, LATENCY_EOS, LATENCY_ALO)
STATELESS, STATELESS_ALO, TUMBLING = "sql-stateless", "sql-stateless-alo", "sql-tumbling"
PIPELINE = [PASSTHROUGH, ONE, TWO, LOOP, QUIX, MODEL, LATENCY_PASS, LATENCY_EOS, LATENCY_ALO]
SQL = [PASSTHROUGH, STATELESS, STATELESS_ALO, TUMBLING]
LABELS = {
    PASSTHROUGH: "(a) passthrough, exactly-once",
    ONE: "(b) streamml PREDICT, 1 worker",
    TWO: "(b) streamml PREDICT, 2 workers",
    LOOP: "(c) per-message loop",
    QUIX: "(d) Quix Streams",
    MODEL: "(e) model alone",
    LATENCY_PASS: "(a) at a steady rate, exactly-once",
    LATENCY_EOS: "(b) at a steady rate, exactly-once",
    LATENCY_ALO: "(b) at a steady rate, at-least-once",
    STATELESS: "SQL stateless CSAS, exactly-once",
    STATELESS_ALO: "SQL stateless CSAS, at-least-once",
    TUMBLING: "SQL tumbling count, 10k keys",
}


@dataclass(frozen=True)
class SuiteOptions:
    """Sizes of one suite run; :meth:`quick` finishes in a few minutes on two cores."""

    #: large enough that joining, warming up and the last commit do not decide the rate
    records: int = 200_000
    rounds: int = 3
    loop_records: int = 5_000
    latency_rate: int = 5_000
    latency_s: float = 20.0
    max_batch: int = 10_000
    max_wait_ms: int = 100
    latency_max_wait_ms: int = 10
    pipeline: bool = True
    sql: bool = True
    quix_python: str | None = None
    #: scenario keys to leave out
    skip: frozenset[str] = frozenset()

    @classmethod
    def quick(cls, **overrides: object) -> SuiteOptions:
        base: dict[str, object] = {"records": 100_000, "rounds": 1, "loop_records": 2_000, "latency_s": 10.0}
        return cls(**{**base, **overrides})  # type: ignore[arg-type]


@dataclass
class SuiteReport:
    """Per scenario key, its summary over the rounds; the targets; versions of what was compared."""

    options: SuiteOptions
    summaries: dict[str, Summary] = field(default_factory=dict)
    versions: dict[str, str] = field(default_factory=dict)
    #: the machine's 1-minute load average when the suite started and when it ended
    load: tuple[float, float] = (0.0, 0.0)

    def get(self, key: str) -> Summary | None:
        return self.summaries.get(key)

    def targets(self) -> list[Target]:
        """The goals, each met, missed, or not measurable (a scenario failed or was skipped)."""
        out = [
            _ratio_target("(b) ≥ 50% of (a)", self.get(ONE), self.get(PASSTHROUGH), 0.5),
            _ratio_target("(b) ≥ 100× (c)", self.get(ONE), self.get(LOOP), 100.0),
            _ratio_target("(b) ≥ 3× (d)", self.get(ONE), self.get(QUIX), 3.0),
        ]
        lat = self.get(LATENCY_EOS)
        rate = f"{self.options.latency_rate:,}/s"
        if lat is not None and lat.p99_ms is not None:
            out.append(Target(f"p99 < 50 ms at {rate} (exactly-once)", f"{lat.p99_ms:.0f} ms", lat.p99_ms < 50))
        elif lat is not None:
            out.append(Target(f"p99 < 50 ms at {rate} (exactly-once)", lat.status, None))
        out += [
            _ratio_target("SQL stateless ≥ 60% of (a)", self.get(STATELESS), self.get(PASSTHROUGH), 0.6),
            _ratio_target("SQL tumbling ≥ 40% of (a)", self.get(TUMBLING), self.get(PASSTHROUGH), 0.4),
        ]
        return [t for t in out if t.measured != "-"]


def _ratio_target(goal: str, ours: Summary | None, theirs: Summary | None, at_least: float) -> Target:
    if ours is None or theirs is None:
        return Target(goal, "-", None)
    ratio = ours.ratio(theirs)
    if ratio is None:
        failed = ours if not ours.ok else theirs
        return Target(goal, f"{failed.label}: {failed.status}", None)
    shown = f"{ratio:.0%}" if at_least < 1 else f"{ratio:,.1f}×"
    return Target(goal, shown, ratio >= at_least)


def versions(quix_python: str | None) -> dict[str, str]:
    out = {}
    for package in ("confluent-kafka", "pyarrow", "polars", "duckdb", "onnxruntime", "numpy"):
        try:
            out[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            out[package] = "-"
    return out


def run_suite(settings: Settings, options: SuiteOptions, progress: Callable[[str], None] | None = None) -> SuiteReport:
    """Run the selected scenarios on the cluster of ``settings`` (which must name its bootstrap servers)."""
    note = progress or (lambda _msg: None)
    load_before = os.getloadavg()[0]
    workdir = Path(tempfile.mkdtemp(prefix="streamml-bench-"))
    report = SuiteReport(options, versions=versions(options.quix_python))
    note("training the model")
    model = data.train_model(workdir)
    quix_python = scenarios.find_quix_python(options.quix_python, settings)
    bench = scenarios.Bench(settings, model, workdir, options.max_batch, options.max_wait_ms, quix_python)
    keys = _selected(options)
    results: dict[str, list[ScenarioResult]] = {k: [] for k in keys}
    n, m = options.records, options.loop_records
    table = data.input_table(n)
    source, loop_source = bench.name("in"), bench.name("loop-in")
    if any(k not in LATENCY for k in keys):  # the latency scenarios produce their own input as they go
        note(f"writing {n:,} input records")
        data.fill_topic(bench.config, bench.admin, source, table)
    if LOOP in keys:
        data.fill_topic(bench.config, bench.admin, loop_source, data.input_table(m))
    runs: dict[str, Callable[[], ScenarioResult]] = {
        PASSTHROUGH: lambda: scenarios.passthrough(bench, source, n),
        ONE: lambda: scenarios.streamml_scoring(bench, source, n, workers=1),
        TWO: lambda: scenarios.streamml_scoring(bench, source, n, workers=2),
        LOOP: lambda: scenarios.per_message(bench, loop_source, m),
        QUIX: lambda: scenarios.quix(bench, source, n),
        MODEL: lambda: scenarios.model_only(bench, table),
        STATELESS: lambda: scenarios.stateless(bench, source, table),
        STATELESS_ALO: lambda: scenarios.stateless(bench, source, table, exactly_once=False),
        TUMBLING: lambda: scenarios.tumbling(bench, source, n),
    }
    try:
        for round_no in range(options.rounds):
            for key in [k for k in keys if k in runs]:
                if key == QUIX and round_no and results[QUIX] and results[QUIX][0].skipped:
                    continue
                note(f"round {round_no + 1}/{options.rounds}: {LABELS[key]}")
                result = runs[key]()
                log.info("%s: %s", key, result)
                results[key].append(result)
        for key, exactly_once in ((LATENCY_PASS, True), (LATENCY_EOS, True), (LATENCY_ALO, False)):
            if key in keys:
                note(f"{LABELS[key]}: {options.latency_rate:,}/s for {options.latency_s:.0f} s")
                results[key].append(
                    scenarios.latency(
                        bench,
                        options.latency_rate,
                        options.latency_s,
                        passthrough=key == LATENCY_PASS,
                        exactly_once=exactly_once,
                        max_wait_ms=options.latency_max_wait_ms,
                    )
                )
    finally:
        bench.drop_topics(source, loop_source)
        shutil.rmtree(workdir, ignore_errors=True)
    for key, rounds in results.items():
        count = rounds[0].records if rounds else 0
        report.summaries[key] = Summary(key, LABELS[key], count, rounds)
    report.load = (load_before, os.getloadavg()[0])
    quix_runs = [r for r in results.get(QUIX, []) if "version" in r.notes]
    report.versions["quixstreams"] = quix_runs[0].notes["version"] if quix_runs else "-"
    return report


def _selected(options: SuiteOptions) -> list[str]:
    keys = (PIPELINE if options.pipeline else []) + (SQL if options.sql else [])
    return [k for k in dict.fromkeys(keys) if k not in options.skip]


# -- presentation ----------------------------------------------------------------------------------------
def _num(value: float | None, digits: int = 0) -> str:
    if value is None:
        return "-"
    return f"{value:,.{digits}f}"


def _times(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:.0%}" if value < 1 else f"{value:,.1f}×"


PIPELINE_HEADER = ["scenario", "records", "records/s", "records/CPU s", "p50 ms", "p99 ms", "CPU s", "peak RSS MiB",
                   "vs (a)", "vs (c)", "vs (d)", "status"]  # fmt: skip
SQL_HEADER = ["scenario", "records", "records/s", "records/CPU s", "CPU s", "peak RSS MiB", "vs (a)", "status"]


def _per_cpu(s: Summary) -> str:
    return _num(s.records / s.cpu_s) if s.ok and s.cpu_s else "-"


def pipeline_rows(report: SuiteReport) -> list[list[str]]:
    """One row per pipeline scenario; latency rows run at a fixed rate, so they carry no ratios."""
    a, c, d = report.get(PASSTHROUGH), report.get(LOOP), report.get(QUIX)
    rows = []
    for key in PIPELINE:
        s = report.get(key)
        if s is None:
            continue
        steady = key in LATENCY
        ratios = ["-", "-", "-"] if steady else [_times(s.ratio(x)) for x in (a, c, d)]
        if key == PASSTHROUGH:
            ratios[0] = "1"
        rows.append([s.label, f"{s.records:,}", _num(s.records_per_s), _per_cpu(s), _num(s.p50_ms, 1),
                     _num(s.p99_ms, 1), _num(s.cpu_s, 2), _num(s.peak_rss_mib), *ratios, _status(s)])  # fmt: skip
    return rows


def sql_rows(report: SuiteReport) -> list[list[str]]:
    a = report.get(PASSTHROUGH)
    rows = []
    for key in SQL:
        s = report.get(key)
        if s is None:
            continue
        rows.append([s.label, f"{s.records:,}", _num(s.records_per_s), _per_cpu(s), _num(s.cpu_s, 2),
                     _num(s.peak_rss_mib), _times(s.ratio(a)) if key != PASSTHROUGH else "1", _status(s)])  # fmt: skip
    return rows


#: the worker loop's stages, as the stage table names them (see streamml.runtime.metrics.STAGES)
STAGE_NAMES = {
    "poll": "poll (waiting for the first record)",
    "queued": "record age when its batch closed",
    "decode": "decode",
    "evaluate": "SQL evaluate (less the model)",
    "predict": "predict (model)",
    "encode": "encode",
    "produce": "produce (queue the records)",
    "commit": "commit (offsets + transaction, or flush + offsets)",
    "batch": "batch closed to committed",
}


def stage_header(report: SuiteReport) -> list[str]:
    """``stage`` and, per latency scenario that ran, its p50 and p99 ms per batch."""
    header = ["stage (ms per batch)"]
    for key in LATENCY:
        s = report.get(key)
        if s is not None:
            header += [f"{LABELS[key]} p50", "p99"]
    return header


def stage_rows(report: SuiteReport) -> list[list[str]]:
    """Where the latency scenarios' milliseconds go: end to end per record, then each stage of the loop per
    batch (median over rounds of each run's p50 and p99), side by side."""
    ran = [s for key in LATENCY if (s := report.get(key)) is not None]
    rows = [["end to end, per record", *[v for s in ran for v in (_num(s.p50_ms, 1), _num(s.p99_ms, 1))]]]
    stages = list(dict.fromkeys(stage for s in ran for stage in s.stages))
    for stage in sorted(stages, key=lambda x: list(STAGE_NAMES).index(x) if x in STAGE_NAMES else len(STAGE_NAMES)):
        cells = [v for s in ran for v in (_num(s.stage_ms(stage, "p50_ms"), 1), _num(s.stage_ms(stage, "p99_ms"), 1))]
        rows.append([STAGE_NAMES.get(stage, stage), *cells])
    return rows if len(rows) > 1 else []


def _status(s: Summary) -> str:
    return "ok" if s.ok else f"{s.status}: {s.error}"


def target_rows(report: SuiteReport) -> list[list[str]]:
    return [[t.goal, t.measured, "-" if t.met is None else "yes" if t.met else "NO"] for t in report.targets()]


def markdown_table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "| " + " | ".join("---" for _ in header) + " |"]
    lines += ["| " + " | ".join(c.replace("|", "/").replace("\n", " ") for c in row) + " |" for row in rows]
    return "\n".join(lines)


@dataclass(frozen=True)
class Section:
    """One section of docs/benchmarks.md."""

    name: str
    title: str
    body: str


def sections(report: SuiteReport) -> list[Section]:
    """The pipeline and SQL sections of docs/benchmarks.md for this report."""
    o = report.options
    setup = (
        f"{o.records:,} simulated transactions (JSON, 30 doubles + Id, User, Class; ~800 bytes) in 2 partitions; "
        f"median of {o.rounds} alternating round{'s' if o.rounds > 1 else ''}; every worker is its own process "
        f"(`python -m streamml.bench.child`); batches of up to {o.max_batch:,} records, {o.max_wait_ms} ms "
        "deadline. records/s runs from the first input record a worker received to the moment the scenario's "
        "consumer group had committed the whole input; CPU s is the workers' user + system time over that span "
        "(all threads); peak RSS is the largest worker's. Every output was read back `read_committed` and had to "
        "hold every input Id exactly once, or the row says FAILED. records/CPU s (records over the workers' CPU "
        "seconds) moves less than records/s when other work shares the machine: the 1-minute load average was "
        f"{report.load[0]:.1f} at the start and {report.load[1]:.1f} at the end of this run on "
        f"{os.cpu_count()} cores. "
        f"Versions: {', '.join(f'{k} {v}' for k, v in report.versions.items())}."
    )
    targets = markdown_table(["target", "measured", "met"], target_rows(report))
    out = []
    if o.pipeline:
        stages = stage_rows(report)
        breakdown = (
            "\n\nWhere the latency rows' milliseconds go, per stage of the worker loop (the worker's own timers, "
            "per batch, after the warm-up; a stage a batch skipped is not counted):\n\n"
            + markdown_table(stage_header(report), stages)
            if stages
            else ""
        )
        body = (
            markdown_table(PIPELINE_HEADER, pipeline_rows(report))
            + breakdown
            + "\n\n"
            + targets
            + "\n\n"
            + setup
            + "\n\n(a) forwards the bytes, one transaction per batch. (b) runs `CREATE STREAM scored AS SELECT Id, "
            "PREDICT('fraud', Time, V1..V28, Amount) AS p FROM tx` in the Runner, exactly-once. "
            f"(c) polls one message, `json.loads`, predicts one row, produces one, commits synchronously: "
            f"{o.loop_records:,} records, records/s extrapolates. (d) a Quix Streams `Application` with "
            '`processing_guarantee="exactly-once"` and a per-record `apply` (its idiom; it has no batch API), '
            "the same ONNX model. (e) ONNX Runtime alone on in-memory arrays, same batches, one thread. "
            f"The model is the fraud autoencoder (30-14-7-14-30). Latency rows: {o.latency_rate:,} records/s for "
            f"{o.latency_s:.0f} s, {o.latency_max_wait_ms} ms batch deadline, record timestamp to output readable "
            "by a `read_committed` consumer; the first second is warm-up and left out."
        )
        out.append(Section("pipeline", "End-to-end scoring pipeline", body))
    if o.sql:
        body = (
            markdown_table(SQL_HEADER, sql_rows(report))
            + "\n\n"
            + setup
            + f"\n\nStateless: `SELECT Id, Time, V1..V28, Amount FROM tx WHERE {scenarios.FILTER}` (JSON -> JSON). "
            "Tumbling: `SELECT User, COUNT(*) AS n FROM tx WINDOW TUMBLING (SIZE 1 MINUTE) GROUP BY User` over "
            "10,000 users, exactly-once with its state changelog; its check is that the latest count per key "
            "and window sums to the input. (a) is the passthrough of the pipeline section, run in the same rounds."
        )
        out.append(Section("sql-queries", "Streaming SQL throughput", body))
    return out
