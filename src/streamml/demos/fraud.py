"""The fraud-detection loop end to end, on the local broker or the configured cluster.

1. stream historical transactions (DELIMITED, as the public demo's CSV replay did);
2. preprocess them with the public demo's SQL (drop unlabelled records, mask the user, convert to AVRO);
3. train the ``autoencoder`` recipe from the preprocessed stream, register and promote it; ``gbdt`` too;
4. deploy ``PREDICT('fraud', ...)`` in a persistent query, with an alerts stream on top;
5. stream live transactions and watch throughput, latency, alerts and the monitor's metrics from labels that
   arrive late; halfway through, amounts drift, the monitor alerts, and the retraining policy trains a
   candidate on the preprocessed records so far, scores it in shadow and promotes it if it is better
   (traffic goes on until it has decided, and a little longer to show the version then in force);
6. write a report with the training plots, the monitor's windows and the retraining steps.

Every step is a method, so the notebook tells the same story one cell at a time.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from streamml.config import Settings
from streamml.demos.live import LiveCounters, copy_plots, write_report
from streamml.demos.monitoring import DemoMonitor, DemoRetraining, LateLabels, drifting
from streamml.formats import get_format
from streamml.ingest.transactions import stream_transactions, transaction_chunks
from streamml.kafka import Admin, BatchConsumer, LocalBroker, Producer, client_config
from streamml.models.registry import ModelVersion, Registry
from streamml.monitor.dashboard import Dashboard
from streamml.monitor.policy import RetrainPolicy
from streamml.runtime.control import publish_events
from streamml.runtime.metrics import QueryMetrics
from streamml.runtime.options import RuntimeOptions
from streamml.runtime.runner import Runner
from streamml.runtime.session import Session, wait_for
from streamml.runtime.training import train_from_stream

SOURCE, PREPROCESSED, SCORES, ALERTS, LABELS = (
    "creditcardfraud_source", "creditcardfraud_preprocessed_avro", "fraud_scores", "fraud_alerts", "fraud_labels",
)  # fmt: skip
MONITOR_METRICS, MONITOR_ALERTS = "fraud_monitor_metrics", "fraud_monitor_alerts"
#: the demo's own topics, removed before it starts
TOPICS = (SOURCE, PREPROCESSED, SCORES, ALERTS, LABELS, MONITOR_METRICS, MONITOR_ALERTS)
FEATURES = ["Time", *(f"V{i}" for i in range(1, 29)), "Amount"]
V_COLUMNS = ", ".join(f"V{i} double" for i in range(1, 29))

PIPELINE_SQL = f"""
-- the source: the CSV replay of the public demo, DELIMITED, keyed by Id
CREATE STREAM {SOURCE} (Id bigint, Timestamp varchar, User varchar, Time int, {V_COLUMNS},
    Amount double, Class string) WITH (kafka_topic='{SOURCE}', value_format='DELIMITED', KEY='Id');
-- preprocessing: drop unlabelled records, mask the user, convert to AVRO
CREATE STREAM {PREPROCESSED} WITH (VALUE_FORMAT='AVRO', KAFKA_TOPIC='{PREPROCESSED}') AS
    SELECT Id, MASK_LEFT(User, 2) AS User, Time, {", ".join(FEATURES[1:-1])}, Amount, Class
    FROM {SOURCE} WHERE Class IS NOT NULL;
"""

SCORING_SQL = f"""
CREATE STREAM {SCORES} WITH (KAFKA_TOPIC='{SCORES}', VALUE_FORMAT='JSON') AS
    SELECT Id, MASK_LEFT(User, 2) AS User, Amount, Class, PREDICT('fraud', {", ".join(FEATURES)}) AS p
    FROM {SOURCE};
CREATE STREAM {ALERTS} WITH (KAFKA_TOPIC='{ALERTS}') AS SELECT * FROM {SCORES} WHERE p->is_anomaly;
"""


@dataclass(frozen=True)
class DemoConfig:
    """Sizes of the demo; the defaults take about three minutes on a 2-core laptop."""

    history: int = 100_000
    fraud_rate: float = 0.002
    live_seconds: float = 40.0
    live_rate: float = 2_000.0
    seed: int = 7
    epochs: int = 40
    output_dir: Path = Path("demo-output")
    service_id: str = "fraud-demo"
    #: from half the live phase on, live amounts are multiplied by this (the drift the monitor must see)
    drift_factor: float = 4.0
    #: the live web page of the monitor (0: a free port; None: none)
    dashboard_port: int | None = 0
    #: run the retraining policy on the monitor's drift alert
    retrain: bool = True

    # the monitor's timing follows the live phase: 8 windows, labels one window late, joined within three
    @property
    def monitor_window_s(self) -> float:
        return self.live_seconds / 8

    @property
    def label_delay_s(self) -> float:
        return self.monitor_window_s

    @property
    def monitor_within_s(self) -> float:
        return 3 * self.monitor_window_s

    @property
    def drift_after_s(self) -> float:
        return self.live_seconds / 2

    # a candidate trains on every record of the training source so far (the drifted ones included: a short
    # recent window would not cover the range of the ever-growing Time feature) and is judged on the windows
    # after them; live traffic goes on past live_seconds while it is in shadow, for at most retrain_budget_s
    @property
    def retrain_budget_s(self) -> float:
        return max(90.0, 2 * self.live_seconds)


@dataclass
class LiveStats(LiveCounters):
    """What the live view shows, refreshed while live traffic streams."""

    tp: int = 0
    fp: int = 0
    fn: int = 0
    #: the monitor's metrics of its latest settled window, and its alerts so far
    quality: dict[str, Any] | None = None
    monitor_alerts: list[str] = field(default_factory=list)
    #: the retraining steps so far
    retraining: list[str] = field(default_factory=list)
    window: deque[tuple[int, int, int]] = field(default_factory=lambda: deque(maxlen=50), repr=False)

    @property
    def precision(self) -> float | None:
        tp, fp, _ = self._rolling()
        return tp / (tp + fp) if tp + fp else None

    @property
    def recall(self) -> float | None:
        tp, _, fn = self._rolling()
        return tp / (tp + fn) if tp + fn else None

    def _rolling(self) -> tuple[int, int, int]:
        if not self.window:
            return 0, 0, 0
        tp, fp, fn = np.asarray(self.window).sum(axis=0)
        return int(tp), int(fp), int(fn)


class FraudDemo:
    """The demo's steps; ``say`` receives one line per step."""

    def __init__(
        self, settings: Settings, config: DemoConfig | None = None, say: Callable[[str], None] = print
    ) -> None:
        self.config = config or DemoConfig()
        self.settings = settings.model_copy(update={"service_id": self.config.service_id})
        self.say = say
        self.runner: Runner | None = None
        self._runner_stop = threading.Event()
        self._runner_thread: threading.Thread | None = None
        self.versions: dict[str, ModelVersion] = {}
        self.timings: dict[str, float] = {}
        self.live: LiveStats | None = None
        self.monitor: DemoMonitor | None = None
        self.dashboard: Dashboard | None = None
        self.retraining: DemoRetraining | None = None
        #: the persistent query scoring live traffic with PREDICT
        self.scoring_query: str | None = None

    # -- 1. cluster and history ---------------------------------------------------------------------------
    def start(self) -> None:
        """Start the local broker unless a cluster is configured; remove what an earlier run left."""
        started = time.perf_counter()
        if not self.settings.bootstrap:
            info = LocalBroker(self.settings).start()
            self.say(
                f"Kafka {info.version} at {info.bootstrap}" + (" (already running)" if info.already_running else "")
            )
        self.config_kafka = client_config(self.settings)
        self.admin = Admin(self.config_kafka)
        prefix = self.config.service_id
        stale = [t for t in self.admin.topic_names(include_internal=True)
                 if t in TOPICS or t.startswith((prefix, f"_{prefix}", f"{SCORES}_shadow_v"))]  # fmt: skip
        for topic in stale:
            self.admin.delete_topic(topic, if_exists=True)
        self.admin.create_topic(SOURCE, partitions=3)
        self.timings["start"] = time.perf_counter() - started

    def stream_history(self) -> None:
        """Produce the historical transactions (about 0.2% fraud, ~1% unlabelled)."""
        started = time.perf_counter()
        chunks = transaction_chunks(self.config.history, fraud_rate=self.config.fraud_rate, seed=self.config.seed)
        with Producer(self.config_kafka) as producer:
            sent = stream_transactions(producer, SOURCE, chunks, "DELIMITED")
        self.timings["history"] = time.perf_counter() - started
        self.say(f"streamed {sent:,} historical transactions to {SOURCE} in {self.timings['history']:.1f} s")

    # -- 2. preprocessing ---------------------------------------------------------------------------------
    def preprocess(self, timeout_s: float = 120.0) -> int:
        """Run the demo's SQL; wait until every labelled record is preprocessed."""
        started = time.perf_counter()
        self.session = Session(self.settings)
        for outcome in self.session.execute(PIPELINE_SQL):
            self.say(f"sql: {outcome.message}")
        self._start_runner()
        expected = self.config.history - self._unlabelled()

        def done() -> bool:
            return self._committed(PREPROCESSED) >= expected

        if not wait_for(done, timeout_s, 0.5):
            raise TimeoutError(f"preprocessing stalled at {self._committed(PREPROCESSED)} of {expected} records")
        self.timings["preprocess"] = time.perf_counter() - started
        self.say(f"preprocessed {expected:,} labelled records to AVRO in {self.timings['preprocess']:.1f} s")
        return expected

    def _unlabelled(self) -> int:
        chunks = transaction_chunks(self.config.history, fraud_rate=self.config.fraud_rate, seed=self.config.seed)
        return sum(t.column("Class").null_count for t in chunks)

    def _committed(self, topic: str) -> int:
        if not self.admin.exists(topic):
            return 0
        metrics = {m.query_id: m for m in self._status()}
        sink_queries = [q for q in metrics if topic.upper() in q]
        return sum(metrics[q].records_out for q in sink_queries)

    def _status(self) -> list[QueryMetrics]:
        return self.runner.status() if self.runner else []

    def _start_runner(self) -> None:
        if self.runner is not None:
            return
        self.runner = Runner(self.settings, RuntimeOptions(max_batch=5_000, max_wait_ms=20), refresh_s=0.5)
        self._runner_thread = threading.Thread(target=self.runner.run, args=(self._runner_stop,), daemon=True)
        self._runner_thread.start()

    # -- 3. training --------------------------------------------------------------------------------------
    def train(self) -> dict[str, ModelVersion]:
        """Train the autoencoder (promoted as ``fraud``) and the supervised gbdt, from the preprocessed stream."""
        registry = Registry(self.settings.registry_root)
        features = ", ".join(FEATURES)
        sql = f"SELECT {features}, Class FROM {PREPROCESSED}"
        for recipe, name, params in (
            ("autoencoder", "fraud", {"epochs": self.config.epochs}),
            ("gbdt", "fraud-gbdt", {}),
        ):
            started = time.perf_counter()
            version = train_from_stream(self.settings, recipe, PREPROCESSED, label="Class", name=name, sql=sql,
                                        params=params, seed=self.config.seed, registry=registry)  # fmt: skip
            self.timings[f"train {recipe}"] = time.perf_counter() - started
            self.versions[recipe] = version
            metrics = version.card.metrics
            self.say(
                f"trained {recipe} → {version.ref}: ROC AUC {metrics.get('roc_auc', float('nan')):.3f}, "
                f"PR AUC {metrics.get('pr_auc', float('nan')):.3f} ({self.timings[f'train {recipe}']:.0f} s)"
            )
        event = registry.promote("fraud", self.versions["autoencoder"].version)
        publish_events(self.settings, [event])
        self.say(f"promoted {event.model}:{event.version} to production")
        return self.versions

    # -- 4. deployment ------------------------------------------------------------------------------------
    def deploy(self, timeout_s: float = 120.0) -> None:
        """Start scoring; the history already in the source topic is scored first, then live traffic starts."""
        started = time.perf_counter()
        outcomes = self.session.execute(SCORING_SQL)
        for outcome in outcomes:
            self.say(f"sql: {outcome.message}")
        self.scoring_query = outcomes[0].result.query_id

        def caught_up() -> bool:
            scored = [m.records_out for m in self._status() if m.query_id == self.scoring_query]
            return bool(scored) and scored[0] >= self.config.history

        wait_for(caught_up, timeout_s, 0.2)
        self.timings["score history"] = time.perf_counter() - started
        self.say(f"scored the {self.config.history:,} historical transactions in {self.timings['score history']:.1f} s")
        c = self.config
        self.monitor = DemoMonitor.define(self.settings, self.session, model="fraud", scores=SCORES, labels=LABELS,
                                          labels_topic=LABELS, topics=(MONITOR_METRICS, MONITOR_ALERTS),
                                          window_s=c.monitor_window_s, within_s=c.monitor_within_s,
                                          psi=0.2).start()  # fmt: skip
        self.say(f"monitor fraud: {SCORES} joined with {LABELS} (labels {c.label_delay_s:g} s late) "
                 f"per {c.monitor_window_s:g} s window, within {c.monitor_within_s:g} s")  # fmt: skip
        if c.dashboard_port is not None:
            self.dashboard = Dashboard(self.settings, port=c.dashboard_port, metrics_topic=MONITOR_METRICS,
                                       alerts_topic=MONITOR_ALERTS).start()  # fmt: skip
            self.say(f"dashboard: {self.dashboard.url}")
        if c.retrain:
            policy = RetrainPolicy(model="fraud", monitor=self.monitor.spec.name, trigger="drift", metric="f1",
                                   margin=0.02, min_windows=2,
                                   min_labelled=200, cooldown_s=c.retrain_budget_s, max_shadow_s=c.retrain_budget_s,
                                   seed=c.seed)  # fmt: skip
            self.retraining = DemoRetraining(self.settings, policy).start()
            self.say(f"retraining policy: on a drift alert, retrain from {PREPROCESSED}, shadow, promote if F1 is "
                     f"better by {policy.margin:g} over {policy.min_windows} windows")  # fmt: skip

    # -- 5. live traffic ----------------------------------------------------------------------------------
    def run_live(
        self, on_stats: Callable[[LiveStats], None] | None = None, stop: threading.Event | None = None
    ) -> LiveStats:
        """Stream live transactions for ``live_seconds`` while scoring; refresh ``on_stats`` as results arrive.
        Traffic goes on while a retraining the drift triggered is pending (see :meth:`_retraining_pending`),
        for at most ``retrain_budget_s`` more.

        Latency is end to end as a consumer sees it: from a live transaction's timestamp to the moment its
        score is readable (committed) on the scores topic.
        """
        stop = stop or threading.Event()
        stats = LiveStats()
        self.live = stats
        c = self.config
        first_id = c.history
        budget = c.retrain_budget_s if self.retraining is not None else 0.0
        chunks = transaction_chunks(int((c.live_seconds + budget) * c.live_rate), fraud_rate=max(c.fraud_rate, 0.005),
                                    seed=c.seed + 1000, first_id=first_id,
                                    chunk=max(100, int(c.live_rate / 4)))  # fmt: skip
        labels = LateLabels(self.settings, LABELS, self.config.label_delay_s).start()
        started = time.monotonic()
        chunks = drifting(chunks, "Amount", self.config.drift_factor,
                          lambda: time.monotonic() - started >= self.config.drift_after_s)  # fmt: skip

        def streaming() -> bool:
            elapsed = time.monotonic() - started
            if stop.is_set() or elapsed >= c.live_seconds + budget:
                return False
            return elapsed < c.live_seconds or self._retraining_pending()

        def produce() -> None:
            with Producer(self.config_kafka) as producer:
                counted = lambda n: setattr(stats, "produced", stats.produced + n)  # noqa: E731
                live = _tap(_while(chunks, streaming), labels.add)
                stream_transactions(producer, SOURCE, live, "DELIMITED", self.config.live_rate, counted)

        producer_thread = threading.Thread(target=produce, daemon=True)
        producer_thread.start()
        flags = pa.struct([("IS_ANOMALY", pa.bool_())])
        decoder = get_format("JSON", pa.schema([("ID", pa.int64()), ("CLASS", pa.string()), ("P", flags)]))
        deadline = started + c.live_seconds + budget + 30
        # from the beginning: nothing produced before the reader is assigned can be missed; history is filtered out
        with BatchConsumer(self.config_kafka, [SCORES], start="earliest") as reader:
            while not stop.is_set() and time.monotonic() < deadline:
                if not producer_thread.is_alive() and stats.scored >= stats.produced:
                    break
                batch = reader.poll_batch(20_000, 0.25)
                if len(batch):
                    decoded = decoder.decode(batch.values)
                    live = pc.greater_equal(decoded.table.column("ID"), first_id).to_numpy(zero_copy_only=False)
                    now_ms = time.time() * 1000
                    stats.latency.observe(now_ms - batch.timestamps[decoded.indices][live].astype(np.float64))
                    stats.scored += int(live.sum())
                    self._account(stats, decoded.table.filter(pa.array(live)))
                self._refresh(stats, started)
                if on_stats is not None:
                    on_stats(stats)
        stop.set()
        producer_thread.join(10)
        labels.stop()
        return stats

    def _retraining_pending(self) -> bool:
        """A drift alert has fired and the retraining it triggers has not decided yet, or decided so recently
        that the monitor has not settled windows scored by the version in force since."""
        r, m = self.retraining, self.monitor
        if r is None or m is None:
            return False
        if r.decided_at is not None:
            return time.monotonic() - r.decided_at < self.config.monitor_within_s + 2 * self.config.monitor_window_s
        return m.drift_fired or bool(r.events)

    def _account(self, stats: LiveStats, table: pa.Table) -> None:
        label = pc.fill_null(pc.equal(table.column("CLASS"), "1"), False).to_numpy(zero_copy_only=False)
        labelled = table.column("CLASS").is_valid().to_numpy(zero_copy_only=False)
        flagged = pc.fill_null(pc.struct_field(table.column("P"), "IS_ANOMALY"), False).to_numpy(zero_copy_only=False)
        tp = int((flagged & label & labelled).sum())
        fp = int((flagged & ~label & labelled).sum())
        fn = int((~flagged & label & labelled).sum())
        stats.window.append((tp, fp, fn))
        stats.tp, stats.fp, stats.fn = stats.tp + tp, stats.fp + fp, stats.fn + fn
        stats.alerts += int(flagged.sum())

    def _refresh(self, stats: LiveStats, started: float) -> None:
        stats.tick(time.monotonic() - started)
        for m in self._status():
            if m.query_id == self.scoring_query:
                stats.model = ", ".join(sorted(set(m.model_versions.values()))) or "-"
        if self.monitor is not None:
            stats.quality = self.monitor.latest()
            stats.monitor_alerts = [a.message for a in self.monitor.alerts]
        if self.retraining is not None:
            stats.retraining = [f"{e.action} {e.model}:{e.version}: {e.reason}" for e in self.retraining.events]

    # -- 6. report ----------------------------------------------------------------------------------------
    def report(self) -> Path:
        """Write ``report.md`` and the training plots into the output folder; returns the report's path."""
        out = self.config.output_dir
        out.mkdir(parents=True, exist_ok=True)
        lines = ["# streamml fraud demo", "", f"Cluster: `{self.config_kafka['bootstrap.servers']}`", ""]
        lines += ["## Models", "", "| recipe | version | ROC AUC | PR AUC | precision | recall | F1 | threshold |",
                  "| --- | --- | --- | --- | --- | --- | --- | --- |"]  # fmt: skip
        for recipe, version in self.versions.items():  # the whole table first: a line between rows ends it
            m = version.card.metrics
            thr = version.card.threshold
            lines.append(
                f"| {recipe} | {version.ref} | {m.get('roc_auc', 0):.3f} | {m.get('pr_auc', 0):.3f} | "
                f"{m.get('precision', 0):.3f} | {m.get('recall', 0):.3f} | {m.get('f1', 0):.3f} | "
                f"{'-' if thr is None else f'{thr:.4g}'} |"
            )
        lines += copy_plots(self.versions.items(), out)
        if self.live is not None:
            s = self.live
            lines += [
                "", "## Live scoring", "",
                f"- live transactions scored: {s.scored:,} of {s.produced:,} produced, by {s.model}",
                s.latency_line("end-to-end latency (transaction timestamp to committed score)"),
                f"- alerts: {s.alerts:,}; precision {_pct(s.tp, s.tp + s.fp)}, recall {_pct(s.tp, s.tp + s.fn)}",
            ]  # fmt: skip
        retraining = self._retraining_section()
        lines += self._monitor_section(out)
        lines += retraining
        return write_report(out, lines, self.timings)

    def _monitor_section(self, out: Path) -> list[str]:
        if self.monitor is None:
            return []
        self.monitor.stop()
        m = self.monitor
        lines = ["", "## Monitoring", "",
                 f"Monitor `{m.spec.name}`: `{SCORES}` joined with the labels on `{LABELS}` (published "
                 f"{self.config.label_delay_s:g} s late), per {m.spec.window_ms / 1000:g} s window; live amounts "
                 f"x{self.config.drift_factor:g} from {self.config.drift_after_s:g} s on.", "",
                 "| window end | version | count | labelled | precision | recall | F1 | PR AUC | PSI max |",
                 "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]  # fmt: skip
        for w in m.windows:
            cells = [_num(w.get(k)) for k in ("precision", "recall", "f1", "pr_auc", "drift_psi_max")]
            lines.append(f"| {w['window_end_ms']} | {w['version']} | {w['count']} | {w['labelled']} | "
                         + " | ".join(cells) + " |")  # fmt: skip
        lines += ["", "Alerts:", "", *(f"- {a.message}" for a in m.alerts)] if m.alerts else ["", "Alerts: none"]
        plot = m.plot(out, self.retraining.promotions if self.retraining is not None else None)
        if plot is not None:
            lines.append(f"\n![monitor]({plot.name})")
        return lines

    def _retraining_section(self) -> list[str]:
        if self.retraining is None:
            return []
        self.retraining.stop()
        p = self.retraining.policy
        window = "every record" if p.train_window_s is None else f"the last {p.train_window_s:g} s"
        lines = ["", "## Retraining", "",
                 f"Policy: on a `{p.alert_rule}` alert, train `{p.model}` on {window} of its training source, score "
                 f"it in shadow, promote if its {p.metric} beats the version in force by "
                 f"{p.margin:g} over at least {p.min_windows} windows and {p.min_labelled} labelled rows.",
                 ""]  # fmt: skip
        events = self.retraining.events
        lines += [f"- {e.action} {e.model}:{e.version}: {e.reason}" for e in events] or ["- not triggered"]
        return lines

    def close(self) -> None:
        """Stop the queries (each commits and leaves its group); the broker keeps running."""
        if self.retraining is not None:
            self.retraining.stop()
        if self.monitor is not None:
            self.monitor.stop()
        if self.dashboard is not None:
            self.dashboard.stop()
        self._runner_stop.set()
        if self._runner_thread is not None:
            self._runner_thread.join(60)


def _pct(num: int, den: int) -> str:
    return f"{num / den:.1%}" if den else "n/a"


def _num(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def _tap(chunks, sink: Callable[[pa.Table], None]):  # type: ignore[no-untyped-def]
    for chunk in chunks:
        sink(chunk)
        yield chunk


def _while(chunks, going: Callable[[], bool]):  # type: ignore[no-untyped-def]
    for chunk in chunks:
        if not going():
            return
        yield chunk
