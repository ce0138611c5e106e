"""Predictive maintenance for connected cars, end to end: MQTT in, SQL, a sequence model scored per car.

1. start Kafka and Mosquitto (unless a cluster is configured), and the MQTT -> Kafka bridge;
2. the car fleet simulator publishes its history over MQTT; the bridge writes it to ``sensor-data``;
3. the connected-car demo's KSQL: JSON to AVRO, re-keyed by car, 5-minute tumbling counts per car;
4. train the ``sequence`` recipe from the re-keyed stream (``failure_occurred`` within the next readings) and
   an autoencoder on normal readings, served as the SQL function ``ANOMALY``;
5. deploy ``PREDICT('car-failure') OVER (PARTITION BY car)``: per car, the last readings are query state;
6. stream live readings over MQTT and watch rate, lag, latency, alerts and rolling precision/recall;
7. write a report with precision, recall, F1 and lead time, and the training plots.

Every step is a method, so the notebook tells the same story one cell at a time.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from streamml.config import Settings
from streamml.demos.live import LiveCounters, copy_plots, num, write_report
from streamml.formats import get_format
from streamml.ingest.car_stream import MqttPublisher, fleet_batches, stream_fleet
from streamml.ingest.cars import DEFAULT_RATE, FAILURE_MODES, KSQL_NAMES, SENSOR_FIELDS, CarFleet
from streamml.ingest.mqtt import BridgeOptions, MqttBridge, parse_rules
from streamml.kafka import Admin, BatchConsumer, LocalBroker, client_config
from streamml.kafka.mosquitto import LocalMosquitto
from streamml.models.registry import ModelVersion, Registry
from streamml.runtime.control import publish_events
from streamml.runtime.options import RuntimeOptions
from streamml.runtime.runner import Runner
from streamml.runtime.session import Session, wait_for
from streamml.runtime.training import train_from_stream

SENSOR_TOPIC, PREDICTIONS, ANOMALIES = "sensor-data", "car-failure-predictions", "car-anomalies"
REKEYED = "CAR_DATA_AVRO_REKEYED"
MQTT_MAP, MQTT_KEY = "vehicles/sensor/data/{car}=" + SENSOR_TOPIC, "{car}"
_TYPES = {"failure_occurred": "VARCHAR", "control_unit_firmware": "INT"}
#: the stream's columns, spelled as the demo's KSQL spells them
COLUMNS = [KSQL_NAMES.get(f, f) for f in SENSOR_FIELDS]
_TYPED = ", ".join(f"{c} {_TYPES.get(c, 'INT' if c.startswith('tire_pressure') else 'DOUBLE')}" for c in COLUMNS)
#: what the sequence model reads: every signal (firmware is a constant per car; the label is the target)
FEATURES = [c for c in COLUMNS if c not in ("control_unit_firmware", "failure_occurred")]

SOURCE_SQL = f"CREATE STREAM car_data ({_TYPED}) WITH (KAFKA_TOPIC='{SENSOR_TOPIC}', VALUE_FORMAT='JSON');"

#: the connected-car demo's KSQL as written: JSON to AVRO, re-keyed by car, 5-minute tumbling counts per car
PIPELINE_SQL = """
CREATE STREAM car_data_avro WITH (VALUE_FORMAT='AVRO', KAFKA_TOPIC='car-data-avro') AS
  SELECT * FROM car_data EMIT CHANGES;
CREATE STREAM car_data_avro_rekeyed AS SELECT ROWKEY AS car, * FROM car_data_avro PARTITION BY car;
CREATE TABLE events_per_5min AS
  SELECT car, COUNT(*) AS event_count FROM car_data_avro_rekeyed
  WINDOW TUMBLING (SIZE 5 MINUTES) GROUP BY car EMIT CHANGES;
"""

#: per reading of a car with a full window: P(failure within the horizon) (the second class, "1"), the
#: model's decision at its threshold, and the version that scored it
SCORING_SQL = f"""
CREATE STREAM car_failure_predictions WITH (KAFKA_TOPIC='{PREDICTIONS}', VALUE_FORMAT='JSON') AS
  SELECT car, ROWTIME AS ts,
    PREDICT('car-failure') OVER (PARTITION BY car)->probabilities[2] AS failure_probability,
    PREDICT('car-failure') OVER (PARTITION BY car)->label = '1' AS failure_predicted,
    PREDICT('car-failure') OVER (PARTITION BY car)->version AS model_version,
    failure_occurred
  FROM car_data_avro_rekeyed EMIT CHANGES;
CREATE FUNCTION ANOMALY AS PREDICT('sensor-ae')->score;
"""


def anomaly_sql(threshold: float) -> str:
    """The UDF demo's query, in spirit: readings whose anomaly score passes ``threshold``."""
    return (
        f"CREATE STREAM car_anomalies WITH (KAFKA_TOPIC='{ANOMALIES}', VALUE_FORMAT='JSON') AS "
        f"SELECT car, ANOMALY() AS score FROM car_data_avro_rekeyed WHERE ANOMALY() > {threshold!r} EMIT CHANGES;"
    )


@dataclass(frozen=True)
class MaintenanceConfig:
    """Sizes of the demo; the defaults take a few minutes on a 2-core laptop."""

    cars: int = 25
    history_steps: int = 3_000
    live_seconds: float = 30.0
    #: readings per second over MQTT while live
    live_rate: float = 500.0
    seed: int = 7
    #: the chance, per reading of a healthy car with current firmware, that each failure mode starts
    failure_rate: float = DEFAULT_RATE
    epochs: int = 25
    #: readings per window and the horizon of "a failure within the next readings" (None: the recipe's)
    window: int | None = None
    horizon: int | None = None
    output_dir: Path = Path("maintenance-output")
    service_id: str = "maintenance-demo"


@dataclass
class MaintenanceStats(LiveCounters):
    """What the live view shows, refreshed while live readings stream."""

    failures: int = 0
    precision: float | None = None
    recall: float | None = None
    f1: float | None = None
    lead_time_median: float | None = None

    @property
    def lag(self) -> int:
        return max(0, self.produced - self.scored)


class _Scored:
    """Live predictions in arrival order (per car, the order of its readings), evaluated once labels are known:
    a prediction is right when it says whether the car fails within the next ``horizon`` readings."""

    def __init__(self, horizon: int) -> None:
        self.horizon = horizon
        self.cars: list[np.ndarray] = []
        self.failed: list[np.ndarray] = []
        self.alerted: list[np.ndarray] = []

    def add(self, cars: np.ndarray, table: pa.Table) -> None:
        self.cars.append(cars)
        self.failed.append(pc.equal(table.column("FAILURE_OCCURRED"), "true").to_numpy(zero_copy_only=False))
        alerted = pc.fill_null(table.column("FAILURE_PREDICTED"), False)
        self.alerted.append(alerted.to_numpy(zero_copy_only=False))

    def metrics(self) -> dict[str, Any]:
        # the recipes bring scikit-learn and matplotlib: loaded when labels are first evaluated, not with the CLI
        from streamml.models.recipes import make_windows
        from streamml.models.recipes.evaluation import binary_metrics, lead_time_metrics

        if not self.cars:
            return {}
        cars, failed, alerted = (np.concatenate(x) for x in (self.cars, self.failed, self.alerted))
        order = np.arange(len(cars))
        # one-reading windows: each labelled "a failure within the next h readings", once those have arrived
        labelled = make_windows(cars, order, np.stack([order, alerted], axis=1), failed, 1, self.horizon)
        if not len(labelled.labels):
            return {}
        assert labelled.to_failure is not None and labelled.failure is not None
        scores = labelled.values[:, 0, 1].astype(np.float64)
        metrics = binary_metrics(labelled.labels, scores, 0.5)
        near = labelled.to_failure <= self.horizon
        metrics.update(lead_time_metrics(labelled.failure[near], labelled.to_failure[near], scores[near] >= 0.5))
        return metrics


class MaintenanceDemo:
    """The demo's steps; ``say`` receives one line per step."""

    def __init__(
        self, settings: Settings, config: MaintenanceConfig | None = None, say: Callable[[str], None] = print
    ) -> None:
        self.config = config or MaintenanceConfig()
        self.settings = settings.model_copy(update={"service_id": self.config.service_id})
        self.say = say
        rates = dict.fromkeys(FAILURE_MODES, self.config.failure_rate)
        self.fleet = CarFleet(self.config.cars, seed=self.config.seed, failure_rates=rates)
        self.runner: Runner | None = None
        self.bridge: MqttBridge | None = None
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self.versions: dict[str, ModelVersion] = {}
        self.timings: dict[str, float] = {}
        self.live: MaintenanceStats | None = None
        self.live_metrics: dict[str, Any] = {}
        self.mqtt: tuple[str, int] = ("127.0.0.1", 1883)

    # -- 1. brokers and bridge ----------------------------------------------------------------------------
    def start(self) -> None:
        """Start Kafka (unless a cluster is configured) and Mosquitto, clear an earlier run, start the bridge."""
        started = time.perf_counter()
        if not self.settings.bootstrap:
            info = LocalBroker(self.settings).start()
            self.say(f"Kafka {info.version} at {info.bootstrap}")
        mosquitto = LocalMosquitto(self.settings).start()
        host_port = mosquitto.host_port
        assert host_port is not None
        self.mqtt = host_port
        self.say(f"Mosquitto at {mosquitto.address}")
        self.kafka = client_config(self.settings)
        self.admin = Admin(self.kafka)
        prefix = self.config.service_id
        ours = (SENSOR_TOPIC, PREDICTIONS, ANOMALIES, "car-data-avro", REKEYED, "EVENTS_PER_5MIN")
        for topic in self.admin.topic_names(include_internal=True):
            if topic in ours or topic.startswith((prefix, f"_{prefix}")):
                self.admin.delete_topic(topic, if_exists=True)
        self.admin.create_topic(SENSOR_TOPIC, partitions=3)
        dead_letters = f"{prefix}_MQTT_BRIDGE_dlq"
        self.admin.create_topic(dead_letters, partitions=1, if_not_exists=True)
        options = BridgeOptions(host=self.mqtt[0], port=self.mqtt[1], client_id=f"{prefix}-bridge", format="json",
                                dead_letter_topic=dead_letters, fresh_session=True)  # fmt: skip
        self.bridge = MqttBridge(parse_rules([MQTT_MAP], [MQTT_KEY]), self.kafka, options)
        self.bridge.start()
        self._spawn(self.bridge.run, self._stop)
        self.say(f"bridging MQTT {self.mqtt[0]}:{self.mqtt[1]} {MQTT_MAP.replace('=', ' -> ')}, keyed {MQTT_KEY}")
        self.timings["start"] = time.perf_counter() - started

    def _spawn(self, target: Callable[..., Any], *args: Any) -> None:
        thread = threading.Thread(target=target, args=args, daemon=True)
        thread.start()
        self._threads.append(thread)

    def _publish(self, steps: int | None, rate: float | None, duration_s: float | None = None,
                 on_batch: Callable[[int], None] | None = None) -> int:  # fmt: skip
        publisher = MqttPublisher(*self.mqtt, client_id=f"{self.config.service_id}-cars", ksql_names=True,
                                  timeout_s=120.0)  # a whole history can be queued for the broker  # fmt: skip
        try:
            count = None if steps is None else steps * self.config.cars
            return stream_fleet(publisher, fleet_batches(self.fleet, count, rate, duration_s), on_batch)
        finally:
            publisher.close()

    # -- 2. history over MQTT -----------------------------------------------------------------------------
    def stream_history(self, timeout_s: float = 120.0) -> int:
        """Publish the fleet's history over MQTT and wait until the bridge has written all of it to Kafka."""
        started = time.perf_counter()
        sent = self._publish(self.config.history_steps, None)
        if not wait_for(lambda: self._records(SENSOR_TOPIC) >= sent, timeout_s, 0.2):
            raise TimeoutError(f"the bridge wrote {self._records(SENSOR_TOPIC)} of {sent} readings to Kafka")
        self.history = self._records(SENSOR_TOPIC)  # with any MQTT re-deliveries the bridge counted
        self.timings["history over MQTT"] = time.perf_counter() - started
        self.say(f"{sent:,} readings of {self.config.cars} cars over MQTT into '{SENSOR_TOPIC}' "
                 f"in {self.timings['history over MQTT']:.1f} s")  # fmt: skip
        return sent

    def _records(self, topic: str) -> int:
        if not self.admin.exists(topic):
            return 0
        return sum(high - low for low, high in self.admin.watermarks(topic).values())

    # -- 3. SQL -------------------------------------------------------------------------------------------
    def preprocess(self, timeout_s: float = 120.0) -> None:
        """Run the demo's KSQL; wait until every reading is converted and re-keyed."""
        started = time.perf_counter()
        self.session = Session(self.settings)
        for outcome in self.session.execute(SOURCE_SQL + PIPELINE_SQL):
            self.say(f"sql: {outcome.message}")
        self.runner = Runner(self.settings, RuntimeOptions(max_batch=5_000, max_wait_ms=20), refresh_s=0.5)
        self._spawn(self.runner.run, self._stop)
        if not wait_for(lambda: self._out(REKEYED) >= self.history, timeout_s, 0.3):
            raise TimeoutError(f"re-keying stalled at {self._out(REKEYED)} of {self.history} readings")
        self.timings["preprocess"] = time.perf_counter() - started
        self.say(f"converted to AVRO and re-keyed by car in {self.timings['preprocess']:.1f} s")

    def _out(self, sink: str) -> int:
        """Records the query writing ``sink`` has committed so far."""
        return sum(m.records_out for m in (self.runner.status() if self.runner else []) if sink.upper() in m.query_id)

    # -- 4. training --------------------------------------------------------------------------------------
    def train(self) -> dict[str, ModelVersion]:
        """Train the failure model (``car-failure``) and the anomaly autoencoder (``sensor-ae``) from the
        re-keyed stream, promote both."""
        registry = Registry(self.settings.registry_root)
        c = self.config
        features = ", ".join(FEATURES)
        shape = {k: v for k, v in (("window", c.window), ("horizon", c.horizon)) if v is not None}
        jobs: list[tuple[str, str, dict[str, Any], str]] = [
            ("sequence", "car-failure", {"key_column": "car", "epochs": c.epochs, **shape},
             f"SELECT car, {features}, failure_occurred"),
            ("autoencoder", "sensor-ae", {"epochs": c.epochs}, f"SELECT {features}, failure_occurred"),
        ]  # fmt: skip
        events = []
        for recipe, name, params, select in jobs:
            started = time.perf_counter()
            version = train_from_stream(self.settings, recipe, REKEYED, label="failure_occurred", name=name,
                                        sql=f"{select} FROM {REKEYED}", params=params, seed=c.seed,
                                        registry=registry)  # fmt: skip
            self.timings[f"train {recipe}"] = time.perf_counter() - started
            self.versions[recipe] = version
            m = version.card.metrics
            spent = self.timings[f"train {recipe}"]
            self.say(f"trained {recipe} -> {version.ref}: precision {num(m.get('precision'))}, recall "
                     f"{num(m.get('recall'))}, F1 {num(m.get('f1'))} ({spent:.0f} s)")  # fmt: skip
            events.append(registry.promote(name, version.version))
        publish_events(self.settings, events)
        return self.versions

    @property
    def window(self) -> int:
        """Readings per window of the trained failure model."""
        return int(self.versions["sequence"].card.params["window"])

    @property
    def horizon(self) -> int:
        """The failure model's horizon: it predicts a failure within this many next readings."""
        return int(self.versions["sequence"].card.params["horizon"])

    # -- 5. deployment ------------------------------------------------------------------------------------
    def deploy(self, timeout_s: float = 180.0) -> None:
        """Score every car's readings in the stream (the history first), and flag anomalous readings."""
        started = time.perf_counter()
        threshold = self.versions["autoencoder"].card.threshold or 0.0
        for outcome in self.session.execute(SCORING_SQL + anomaly_sql(round(float(threshold), 6))):
            self.say(f"sql: {outcome.message}")
        if not wait_for(lambda: self._out(PREDICTIONS.replace("-", "_")) >= self.history, timeout_s, 0.3):
            raise TimeoutError("scoring the history stalled")
        self.timings["score history"] = time.perf_counter() - started
        self.say(f"scored the history per car in {self.timings['score history']:.1f} s")

    # -- 6. live traffic ----------------------------------------------------------------------------------
    def run_live(
        self, on_stats: Callable[[MaintenanceStats], None] | None = None, stop: threading.Event | None = None
    ) -> MaintenanceStats:
        """Publish live readings over MQTT for ``live_seconds`` while scoring; refresh ``on_stats`` as
        predictions arrive. Latency: from a reading's Kafka timestamp to its committed prediction."""
        stop = stop or threading.Event()
        stats = MaintenanceStats()
        self.live = stats
        scored = _Scored(self.horizon)

        def publish() -> None:
            self._publish(None, self.config.live_rate, self.config.live_seconds,
                          lambda n: setattr(stats, "produced", stats.produced + n))  # fmt: skip

        publisher = threading.Thread(target=publish, daemon=True)
        started = time.monotonic()
        live_from_ms = time.time() * 1000  # a reading bridged from now on is live (its Kafka timestamp)
        publisher.start()
        schema = pa.schema([("FAILURE_PREDICTED", pa.bool_()), ("FAILURE_OCCURRED", pa.string()),
                            ("MODEL_VERSION", pa.int32())])  # fmt: skip
        decoder = get_format("JSON", schema)
        deadline = started + self.config.live_seconds + 60
        with BatchConsumer(self.kafka, [PREDICTIONS], start="earliest") as reader:
            while not stop.is_set() and time.monotonic() < deadline:
                if not publisher.is_alive() and stats.scored >= stats.produced:
                    break
                batch = reader.poll_batch(20_000, 0.25)
                if len(batch):
                    decoded = decoder.decode(batch.values)
                    table, stamps = decoded.table, batch.timestamps[decoded.indices]
                    cars = np.asarray(batch.keys, dtype=object)[decoded.indices]  # the car is the record key
                    live = stamps >= live_from_ms
                    if live.any():
                        stats.latency.observe(time.time() * 1000 - stamps[live].astype(np.float64))
                        kept = table.filter(pa.array(live))
                        scored.add(cars[live], kept)
                        stats.scored += kept.num_rows
                        stats.alerts += int(pc.sum(pc.fill_null(kept.column("FAILURE_PREDICTED"), False)).as_py() or 0)
                        stats.failures += int(pc.sum(pc.equal(kept.column("FAILURE_OCCURRED"), "true")).as_py() or 0)
                self._refresh(stats, started, scored)
                if on_stats is not None:
                    on_stats(stats)
        stop.set()
        publisher.join(10)
        self.live_metrics = scored.metrics()
        return stats

    def _refresh(self, stats: MaintenanceStats, started: float, scored: _Scored) -> None:
        if not stats.tick(time.monotonic() - started):
            return
        m = scored.metrics()
        stats.precision, stats.recall, stats.f1 = m.get("precision"), m.get("recall"), m.get("f1")
        stats.lead_time_median = m.get("lead_time_median")
        for q in self.runner.status() if self.runner else []:
            if PREDICTIONS.replace("-", "_").upper() in q.query_id:
                stats.model = q.model_versions.get("car-failure", "-")

    # -- 7. report ----------------------------------------------------------------------------------------
    def report(self) -> Path:
        """Write ``report.md`` and the training plots into the output folder; returns the report's path."""
        out = self.config.output_dir
        out.mkdir(parents=True, exist_ok=True)
        c = self.config
        lines = ["# streamml predictive maintenance demo", "",
                 f"{c.cars} cars over MQTT `{self.mqtt[0]}:{self.mqtt[1]}` into Kafka "
                 f"`{self.kafka['bootstrap.servers']}`; failure = `failure_occurred` within the next {self.horizon} "
                 f"readings, from windows of {self.window} readings per car.", "",
                 "## Models (held-out newest part of the training range)", "",
                 "| recipe | version | precision | recall | F1 | lead time (median readings) | failures caught |",
                 "| --- | --- | --- | --- | --- | --- | --- |"]  # fmt: skip
        for recipe, version in self.versions.items():
            m = version.card.metrics
            lines.append(f"| {recipe} | {version.ref} | {num(m.get('precision'))} | {num(m.get('recall'))} | "
                         f"{num(m.get('f1'))} | {num(m.get('lead_time_median'), 1)} | "
                         f"{_share(m.get('failures_caught'))} |")  # fmt: skip
        if self.live is not None:
            s, m = self.live, self.live_metrics
            lines += [
                "", "## Live scoring (readings after the training range)", "",
                f"- readings scored: {s.scored:,} of {s.produced:,} published, by {s.model}",
                s.latency_line("latency (reading in Kafka to committed prediction)"),
                f"- failure prediction: precision {num(m.get('precision'))}, recall {num(m.get('recall'))}, "
                f"F1 {num(m.get('f1'))}, lead time median {num(m.get('lead_time_median'), 1)} readings "
                f"(mean {num(m.get('lead_time_mean'), 1)}), failures caught {_share(m.get('failures_caught'))} "
                f"of {m.get('failures', 0)}",
                f"- alerts: {s.alerts:,}; failures seen: {s.failures:,}",
            ]  # fmt: skip
        lines += copy_plots(self.versions.items(), out)
        return write_report(out, lines, self.timings)

    def close(self) -> None:
        """Stop the queries and the bridge (each commits what it has); the brokers keep running."""
        self._stop.set()
        for thread in self._threads:
            thread.join(60)
        if self.bridge is not None:
            self.bridge.close()


def _share(value: Any) -> str:
    return "n/a" if value is None else f"{float(value):.0%}"
