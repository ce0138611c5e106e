"""Digits over request/reply: a picture classifier trained from a topic, asked through Kafka, answering once.

The three apps of a toy "ML system", done with streamml's parts:

1. start Kafka (unless a cluster is configured);
2. write labelled digit pictures (PNG, base64 in JSON) to ``digit-images``;
3. train the ``image`` recipe (a small CNN) from that topic through SQL (``IMAGE_PIXELS``), with per-class
   accuracy and train/test accuracy per epoch on its card; or, with ``dont_train``, take the saved version;
4. the model app is a persistent query: ``prediction_request`` -> ``PREDICT`` -> ``prediction_output``, copying
   each request's correlation and reply headers to its reply, exactly once;
5. the request app and the reply app are one :class:`~streamml.serve.requests.Client`: callers send pictures it
   never trained on and print each answer with its latency, while the live view counts accuracy;
6. a report with the accuracy per class, live and held out, the epoch curves and the latency percentiles.

Every step is a method, so the notebook tells the same story one cell at a time.
"""

from __future__ import annotations

import threading
import time
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import orjson

from streamml.config import Settings
from streamml.demos.live import LiveCounters, copy_plots, num, write_report
from streamml.errors import StreamMLError
from streamml.ingest.digits import digit_records, load
from streamml.kafka import Admin, LocalBroker, Producer, client_config
from streamml.models.registry import ModelVersion, Registry
from streamml.runtime.control import publish_events
from streamml.runtime.options import RuntimeOptions
from streamml.runtime.runner import Runner
from streamml.runtime.session import Session
from streamml.runtime.training import train_from_stream
from streamml.serve.requests import Client, RequestTimeout

MODEL = "digits"
IMAGES, REQUESTS, REPLIES = "digit-images", "prediction_request", "prediction_output"
SOURCE_SQL = f"""
CREATE STREAM digit_images (ID BIGINT, IMAGE VARCHAR, LABEL INT)
  WITH (KAFKA_TOPIC='{IMAGES}', VALUE_FORMAT='JSON');
CREATE STREAM prediction_request (ID BIGINT, IMAGE VARCHAR)
  WITH (KAFKA_TOPIC='{REQUESTS}', VALUE_FORMAT='JSON');
"""


def pixels_sql(height: int, width: int) -> str:
    """The model's input, the same expression in training and in scoring."""
    return f"IMAGE_PIXELS(IMAGE, {height}, {width})"


def model_sql(height: int, width: int) -> str:
    """The model app: every request answered with the digit, its probability and the version that said so."""
    predict = f"PREDICT('{MODEL}', {pixels_sql(height, width)})"
    return (
        f"CREATE STREAM prediction_output WITH (KAFKA_TOPIC='{REPLIES}', VALUE_FORMAT='JSON') AS\n"
        f"  SELECT ID, {predict}->label AS DIGIT, {predict}->probability AS CONFIDENCE,\n"
        f"    {predict}->version AS MODEL_VERSION\n"
        "  FROM prediction_request EMIT CHANGES;"
    )


@dataclass(frozen=True)
class DigitsConfig:
    """Sizes of the demo; the defaults take about two minutes on a 2-core laptop."""

    #: pixels per side of each picture (the 8x8 digits upscaled; Fashion-MNIST's pictures are 28x28)
    size: int = 28
    epochs: int = 30
    #: evaluate the saved model instead of training one
    dont_train: bool = False
    live_seconds: float = 20.0
    #: callers asking at once, each waiting for its answer before the next question
    callers: int = 8
    seed: int = 7
    output_dir: Path = Path("digits-output")
    service_id: str = "digits-demo"


@dataclass
class DigitsStats(LiveCounters):
    """What the live view shows: questions asked and answered, accuracy so far, the last answers."""

    timeouts: int = 0
    #: per picture asked about (questions cycle through them): its digit and whether the answer was right
    answers: dict[int, tuple[str, bool]] = field(default_factory=dict)
    recent: deque[str] = field(default_factory=lambda: deque(maxlen=6))

    @property
    def accuracy(self) -> float | None:
        """Share of the pictures asked about that were answered right."""
        return sum(right for _, right in self.answers.values()) / len(self.answers) if self.answers else None

    def class_accuracy(self) -> dict[str, float]:
        """Per digit, the share of its pictures answered right."""
        asked = Counter(digit for digit, _ in self.answers.values())
        right = Counter(digit for digit, ok in self.answers.values() if ok)
        return {digit: right[digit] / asked[digit] for digit in sorted(asked)}


class DigitsDemo:
    """The demo's steps; ``say`` receives one line per step."""

    def __init__(self, settings: Settings, config: DigitsConfig | None = None, say: Callable[[str], None] = print):
        self.config = config or DigitsConfig()
        self.settings = settings.model_copy(update={"service_id": self.config.service_id})
        self.say = say
        labels = load()[1]
        ids = np.arange(len(labels))
        #: every fifth picture is never trained on: those are the questions
        self.train_ids, self.question_ids = ids[ids % 5 != 0], ids[ids % 5 == 0]
        self.version: ModelVersion | None = None
        self.runner: Runner | None = None
        self.live: DigitsStats | None = None
        self.timings: dict[str, float] = {}
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []

    # -- 1. broker --------------------------------------------------------------------------------------------
    def start(self) -> None:
        """Start Kafka (unless a cluster is configured) and clear an earlier run's topics."""
        started = time.perf_counter()
        if not self.settings.bootstrap:
            info = LocalBroker(self.settings).start()
            self.say(f"Kafka {info.version} at {info.bootstrap}")
        self.kafka = client_config(self.settings)
        self.admin = Admin(self.kafka)
        prefix = self.config.service_id
        for topic in self.admin.topic_names(include_internal=True):
            if topic in (IMAGES, REQUESTS, REPLIES) or topic.startswith((prefix, f"_{prefix}")):
                self.admin.delete_topic(topic, if_exists=True)
        for topic in (IMAGES, REQUESTS, REPLIES):
            self.admin.create_topic(topic, partitions=3)
        self.session = Session(self.settings)
        for outcome in self.session.execute(SOURCE_SQL):
            self.say(f"sql: {outcome.message}")
        self.timings["start"] = time.perf_counter() - started

    # -- 2. labelled pictures ---------------------------------------------------------------------------------
    def write_pictures(self) -> int:
        """Write the training pictures, labelled, to ``digit-images``."""
        started = time.perf_counter()
        records, _ = digit_records(self.train_ids, self.config.size)
        with Producer(self.kafka) as producer:
            producer.produce_batch(IMAGES, [orjson.dumps(r) for r in records], [str(r["ID"]).encode() for r in records])
        self.timings["pictures"] = time.perf_counter() - started
        self.say(f"{len(records):,} labelled {self.config.size}x{self.config.size} pictures into '{IMAGES}'; "
                 f"{len(self.question_ids):,} more kept back as questions")  # fmt: skip
        return len(records)

    # -- 3. training ------------------------------------------------------------------------------------------
    def train(self) -> ModelVersion:
        """Train ``digits`` from the topic through SQL and promote it; with ``dont_train``, take the saved one."""
        registry = Registry(self.settings.registry_root)
        if self.config.dont_train:
            if MODEL not in registry.list():
                raise StreamMLError(f"no saved '{MODEL}' model in {self.settings.registry_root}",
                                    hint="run the demo once without --dont-train to train and save it")  # fmt: skip
            self.version = registry.get(MODEL)
            self.say(f"evaluating the saved {self.version.ref} (test accuracy "
                     f"{num(self.version.card.metrics.get('accuracy'))} on its card)")  # fmt: skip
            return self.version
        started = time.perf_counter()
        size = self.config.size
        self.version = train_from_stream(
            self.settings, "image", "DIGIT_IMAGES", label="LABEL", name=MODEL, seed=self.config.seed,
            sql=f"SELECT {pixels_sql(size, size)} AS PIXELS, LABEL FROM digit_images",
            params={"epochs": self.config.epochs, "height": size, "width": size}, registry=registry,
        )  # fmt: skip
        publish_events(self.settings, [registry.promote(MODEL, self.version.version)])
        self.timings["train"] = time.perf_counter() - started
        m = self.version.card.metrics
        self.say(f"trained {self.version.ref} on {self.version.card.lineage.rows:,} pictures in "
                 f"{self.timings['train']:.0f} s: test accuracy {num(m.get('accuracy'))} after "
                 f"{m.get('epochs')} epochs")  # fmt: skip
        return self.version

    # -- 4. the model app -------------------------------------------------------------------------------------
    def deploy(self) -> None:
        """Start the model app: a persistent PREDICT query from the request topic to the reply topic."""
        assert self.version is not None, "train() first"
        params = self.version.card.params
        for outcome in self.session.execute(model_sql(int(params["height"]), int(params["width"]))):
            self.say(f"sql: {outcome.message}")
        # a question waits for its answer: batches close after a few milliseconds, not when full
        self.runner = Runner(self.settings, RuntimeOptions(max_batch=1_000, max_wait_ms=5), refresh_s=0.5)
        thread = threading.Thread(target=self.runner.run, args=(self._stop,), daemon=True)
        thread.start()
        self._threads.append(thread)

    # -- 5. the request and reply apps ------------------------------------------------------------------------
    def run_live(
        self, on_stats: Callable[[DigitsStats], None] | None = None, stop: threading.Event | None = None
    ) -> DigitsStats:
        """``callers`` threads ask about the kept-back pictures for ``live_seconds`` (each waits for its
        answer); every answer is checked against the picture's label. Latency: request sent to reply read."""
        stop = stop or threading.Event()
        stats = DigitsStats()
        self.live = stats
        questions, labels = digit_records(self.question_ids, self.config.size, label=False)
        lock = threading.Lock()
        asked = iter(range(1 << 62))
        started = time.monotonic()

        def caller(client: Client) -> None:
            while not stop.is_set() and time.monotonic() - started < self.config.live_seconds:
                with lock:
                    i = next(asked) % len(questions)
                    stats.produced += 1
                sent = time.perf_counter()
                try:
                    reply = client.predict(REQUESTS, questions[i], reply=REPLIES, timeout=30)
                except RequestTimeout:
                    with lock:
                        stats.timeouts += 1
                    continue
                latency = (time.perf_counter() - sent) * 1000
                with lock:
                    _answered(stats, int(questions[i]["ID"]), str(labels[i]), reply, latency)

        with Client(self.settings) as client:
            callers = [threading.Thread(target=caller, args=(client,), daemon=True) for _ in range(self.config.callers)]
            for thread in callers:
                thread.start()
            while any(t.is_alive() for t in callers):
                time.sleep(0.1)
                with lock:
                    if stats.tick(time.monotonic() - started) and on_stats is not None:
                        on_stats(stats)
            for thread in callers:
                thread.join()
        stop.set()
        if on_stats is not None:
            on_stats(stats)
        return stats

    # -- 6. report --------------------------------------------------------------------------------------------
    def report(self) -> Path:
        """Write ``report.md`` with the per-class plots into the output folder; returns the report's path."""
        from streamml.models.recipes import plots

        assert self.version is not None, "train() first"
        out = self.config.output_dir
        out.mkdir(parents=True, exist_ok=True)
        m, card = self.version.card.metrics, self.version.card
        lines = ["# streamml digits demo", "",
                 f"Questions on `{REQUESTS}`, answers on `{REPLIES}` (Kafka `{self.kafka['bootstrap.servers']}`), "
                 f"matched by the `kafka_correlationId` header; the model is the query `PREDICT('{MODEL}', "
                 f"{pixels_sql(int(card.params['height']), int(card.params['width']))})`.", "",
                 "## Model (held-out part of the training pictures)", "",
                 "| version | pictures | epochs | test accuracy | macro F1 |", "| --- | --- | --- | --- | --- |",
                 f"| {self.version.ref} | {card.lineage.rows or 0:,} | {m.get('epochs')} | {num(m.get('accuracy'))} | "
                 f"{num(m.get('macro_f1'))} |"]  # fmt: skip
        if self.live is not None:
            s = self.live
            lines += ["", "## Live questions (pictures never trained on)", "",
                      f"- answered: {s.scored:,} of {s.produced:,} asked by {self.config.callers} callers, "
                      f"timeouts {s.timeouts}, by {s.model}",
                      f"- accuracy: {num(s.accuracy)} over {len(s.answers):,} distinct pictures",
                      s.latency_line("latency (question sent to answer read)"),
                      f"- answers per second: {s.scored / max(self.config.live_seconds, 1e-9):,.0f}"]  # fmt: skip
            live = s.class_accuracy()
            if live:
                lines += ["", "| digit | " + " | ".join(live) + " |", "| --- |" + " --- |" * len(live),
                          "| accuracy | " + " | ".join(num(v) for v in live.values()) + " |"]  # fmt: skip
                plots.per_class_accuracy(live, out / "live-per_class_accuracy.png", "per-class accuracy (live)")
                lines.append("\n![live per-class accuracy](live-per_class_accuracy.png)")
        lines += copy_plots([("image", self.version)], out)
        return write_report(out, lines, self.timings)

    def close(self) -> None:
        """Stop the model app (it commits what it has); the broker keeps running."""
        self._stop.set()
        for thread in self._threads:
            thread.join(60)


def _answered(stats: DigitsStats, picture: int, truth: str, reply: dict[str, Any], latency_ms: float) -> None:
    """Count one answer (the caller holds the stats' lock) and keep its line for the view."""
    guess = str(reply.get("DIGIT"))
    stats.scored += 1
    stats.answers[picture] = (truth, guess == truth)
    stats.latency.observe(np.asarray([latency_ms]))
    stats.model = f"{MODEL}:{reply.get('MODEL_VERSION')}"
    mark = "right" if guess == truth else f"wrong, it is {truth}"
    stats.recent.append(f"picture {reply.get('ID')}: {guess} (p={num(reply.get('CONFIDENCE'), 2)}), {mark}, "
                        f"{latency_ms:.0f} ms")  # fmt: skip
