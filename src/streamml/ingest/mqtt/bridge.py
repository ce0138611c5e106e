"""The MQTT -> Kafka bridge: devices publish to MQTT, the bridge writes every message to Kafka without losing one.

No loss comes from holding the MQTT acknowledgement until Kafka has the record:

- the bridge subscribes with QoS 1 in a persistent session (fixed client id, MQTT 5 clean start off, a session
  expiry), so the broker keeps what arrives while the bridge is down and re-sends what it never acknowledged;
- paho's ``manual_ack`` holds each PUBACK; a message is acknowledged only after its Kafka delivery report
  (idempotent producer, ``acks=all``) came back. MQTT requires PUBACKs in the order the PUBLISHes arrived, so
  every client keeps a FIFO of its messages and acknowledges the prefix whose deliveries are confirmed;
- produces are batched by librdkafka (no flush per message) and the in-flight window is MQTT 5's Receive
  Maximum (``receive_maximum``), not Mosquitto's default 20.

A crash (``kill -9``) loses nothing: unacknowledged messages are re-sent with the DUP flag on reconnect, and
land in Kafka twice at worst, as MQTT's at-least-once allows (``duplicates`` counts DUP-flagged arrivals).
Messages that no rule routes, payloads that are not what ``--format`` expects, and records Kafka refuses for
what they are go to a dead-letter topic with the runtime's dead-letter headers, and are acknowledged. Any
other delivery failure (topic missing, cluster down past the producer's timeout) stops the bridge with an
error and without acknowledging, so the broker keeps the messages for the next start.

``workers`` > 1 runs that many clients in this process, sharing the subscription through an MQTT 5 shared
subscription (``$share/<client id>/<filter>``), each with its own session (``<client id>-<i>``) and FIFO.
Counters are logged every ``stats_every_s``; they are not on the runtime's status topic, which carries the
metrics of persistent queries.
"""

from __future__ import annotations

import functools
import logging
import queue
import re
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import paho.mqtt.client as mqtt
from confluent_kafka import KafkaError as CKafkaError
from confluent_kafka import KafkaException
from confluent_kafka import Producer as CProducer
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.subscribeoptions import SubscribeOptions

from streamml.errors import BrokerError, KafkaError
from streamml.formats.json import object_problem
from streamml.ingest.mqtt.rules import Router, Rule
from streamml.kafka.cluster import translate
from streamml.kafka.headers import H_KIND, H_MESSAGE, H_QUERY, H_TOPIC, H_TRUNCATED, MAX_VALUE_BYTES

log = logging.getLogger(__name__)

#: header naming the MQTT topic of every bridged record
H_MQTT_TOPIC = "mqtt.topic"
_KAFKA_TOPIC = re.compile(r"^[A-Za-z0-9._-]{1,249}$")
#: refusals of a record for what it is: sending it again fails again, so it is dead-lettered
_REJECTED = (
    CKafkaError.MSG_SIZE_TOO_LARGE,
    CKafkaError.INVALID_MSG_SIZE,
    CKafkaError.INVALID_RECORD,
    CKafkaError.RECORD_LIST_TOO_LARGE,
)


@dataclass(frozen=True)
class BridgeOptions:
    """How the bridge connects and what it expects of payloads."""

    host: str = "127.0.0.1"
    port: int = 1883
    client_id: str = "streamml-bridge"
    workers: int = 1
    format: Literal["raw", "json"] = "raw"
    dead_letter_topic: str = "streamml_MQTT_STREAMML-BRIDGE_dlq"
    #: how long the broker keeps the session (and queues messages) while the bridge is away
    session_expiry_s: int = 7 * 24 * 3600
    #: start a new session, dropping what the broker queued for this client id while it was away
    fresh_session: bool = False
    #: unacknowledged messages the broker may send each client at once (MQTT 5 Receive Maximum)
    receive_maximum: int = 2000
    keepalive_s: int = 30
    max_batch: int = 5000
    stats_every_s: float = 10.0


@dataclass
class BridgeStats:
    """Counters of one bridge process."""

    received: int = 0
    produced: int = 0
    dead_lettered: int = 0
    acked: int = 0
    duplicates: int = 0
    pending: int = 0

    def line(self) -> str:
        return " ".join(f"{k}={v}" for k, v in asdict(self).items())


class _Pending:
    """One received QoS 1/2 message awaiting its Kafka delivery report, in its client's FIFO."""

    __slots__ = ("done", "mid", "qos")

    def __init__(self, mid: int, qos: int) -> None:
        self.mid = mid
        self.qos = qos
        self.done = False


@dataclass
class _Worker:
    """One MQTT client of the bridge and its acknowledgement FIFO."""

    client: mqtt.Client
    client_id: str
    fifo: deque[_Pending] = field(default_factory=deque)
    subscribed: threading.Event = field(default_factory=threading.Event)
    error: str | None = None


class MqttBridge:
    """Moves MQTT messages matched by ``rules`` into Kafka; ``start`` then ``run`` until ``stop`` is set."""

    def __init__(self, rules: Sequence[Rule], kafka_config: Mapping[str, Any], options: BridgeOptions) -> None:
        if options.workers < 1:
            raise BrokerError(f"--workers must be at least 1, not {options.workers}")
        self.options = options
        self.router = Router(rules)
        self.stats = BridgeStats()
        self._bootstrap = str(kafka_config.get("bootstrap.servers"))
        conf = {
            **kafka_config,
            "enable.idempotence": True,
            "acks": "all",
            "linger.ms": 5,
            "batch.size": 1024 * 1024,
            "socket.nagle.disable": True,
        }
        try:
            self._producer = CProducer(conf)
        except KafkaException as exc:
            raise translate(exc, "creating the bridge's producer", self._bootstrap) from None
        self._inbox: queue.SimpleQueue[tuple[_Worker, mqtt.MQTTMessage]] = queue.SimpleQueue()
        self._valid_topics: dict[str, bool] = {}
        self._rejected: list[tuple[_Pending, bytes | None, bytes | None, str, str]] = []
        self._failure: KafkaError | None = None
        self._query = f"mqtt-bridge/{options.client_id}"
        self.started_at = time.time()
        self.workers = [self._make_worker(i) for i in range(options.workers)]

    # -- MQTT side ----------------------------------------------------------------------------------------
    def _make_worker(self, index: int) -> _Worker:
        opts = self.options
        client_id = opts.client_id if opts.workers == 1 else f"{opts.client_id}-{index}"
        client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5, manual_ack=True)
        worker = _Worker(client, client_id)
        filters = self.router.subscriptions()
        if opts.workers > 1:
            filters = [f"$share/{opts.client_id}/{f}" for f in filters]

        def on_connect(c: mqtt.Client, _u: object, flags: Any, reason: Any, _p: object) -> None:
            if reason.is_failure:
                worker.error = f"the MQTT broker refused client '{client_id}': {reason}"
                return
            log.info("MQTT client '%s' connected (session present: %s)", client_id, flags.session_present)
            c.subscribe([(f, SubscribeOptions(qos=1)) for f in filters])

        def on_subscribe(_c: mqtt.Client, _u: object, _mid: int, reasons: list[Any], _p: object) -> None:
            failed = [f"{f}: {r}" for f, r in zip(filters, reasons, strict=False) if r.is_failure]
            if failed:
                worker.error = f"subscription refused ({'; '.join(failed)})"
                return
            log.info("MQTT client '%s' subscribed to %s", client_id, ", ".join(filters))
            worker.subscribed.set()

        def on_message(_c: mqtt.Client, _u: object, msg: mqtt.MQTTMessage) -> None:
            self._inbox.put((worker, msg))

        def on_disconnect(_c: mqtt.Client, _u: object, _f: object, reason: Any, _p: object) -> None:
            if reason.is_failure:
                log.warning("MQTT client '%s' disconnected (%s); reconnecting", client_id, reason)

        client.on_connect = on_connect
        client.on_subscribe = on_subscribe
        client.on_message = on_message
        client.on_disconnect = on_disconnect
        client.reconnect_delay_set(1, 5)
        return worker

    def start(self, timeout_s: float = 15.0) -> None:
        """Connect every client and wait until each one's subscription is confirmed."""
        opts = self.options
        props = Properties(PacketTypes.CONNECT)
        props.SessionExpiryInterval = opts.session_expiry_s
        props.ReceiveMaximum = opts.receive_maximum
        where = f"{opts.host}:{opts.port}"
        for w in self.workers:
            try:
                w.client.connect(
                    opts.host, opts.port, opts.keepalive_s, clean_start=opts.fresh_session, properties=props
                )
            except OSError as exc:
                raise BrokerError(
                    f"cannot reach the MQTT broker at {where} ({exc})",
                    hint="start it with 'streamml mqtt start' or pass --mqtt HOST:PORT",
                ) from None
            w.client.loop_start()
        deadline = time.monotonic() + timeout_s
        for w in self.workers:
            while not w.subscribed.wait(0.05):
                if w.error or time.monotonic() > deadline:
                    self.close(drain=False)
                    raise BrokerError(w.error or f"no subscription confirmed by the MQTT broker at {where}")

    def snapshot(self) -> dict[str, Any]:
        """The bridge's counters shaped as a query's status (``streamml status`` lists it with the queries):
        ``records_in`` received over MQTT, ``records_out`` written to Kafka, ``lag`` the messages received but
        not acknowledged yet."""
        s = self.stats
        elapsed = time.time() - self.started_at
        return {
            "query": self._query, "state": "ERROR" if self._failure is not None else "RUNNING",
            "error": None if self._failure is None else str(self._failure), "records_in": s.received,
            "records_out": s.produced, "dead_letters": s.dead_lettered, "acked": s.acked, "duplicates": s.duplicates,
            "rate_in": round(s.received / elapsed, 1) if elapsed > 0 else 0.0, "lag": {"unacknowledged": s.pending},
            "model_versions": {}, "latency_p50_ms": None, "latency_p99_ms": None,
        }  # fmt: skip

    # -- the pump -----------------------------------------------------------------------------------------
    def run(self, stop: threading.Event) -> BridgeStats:
        """Bridge until ``stop`` is set, then finish what arrived and close; returns the final counters."""
        next_stats = time.monotonic() + self.options.stats_every_s
        try:
            while not stop.is_set():
                self.step(timeout_s=0.05)
                if time.monotonic() >= next_stats:
                    next_stats = time.monotonic() + self.options.stats_every_s
                    log.info("mqtt bridge: %s", self.stats.line())
        finally:
            self.close(drain=self._failure is None)
        log.info("mqtt bridge stopped: %s", self.stats.line())
        return self.stats

    def step(self, timeout_s: float = 0.0) -> int:
        """Produce what arrived (waiting up to ``timeout_s`` for the first message), serve delivery reports,
        acknowledge the confirmed prefixes; returns how many messages were taken in."""
        taken = 0
        try:
            item = self._inbox.get(timeout=timeout_s) if timeout_s > 0 else self._inbox.get_nowait()
        except queue.Empty:
            item = None
        while item is not None:
            self._take(*item)
            taken += 1
            if taken >= self.options.max_batch:
                break
            try:
                item = self._inbox.get_nowait()
            except queue.Empty:
                item = None
        self._producer.poll(0)
        self._settle()
        return taken

    def _take(self, worker: _Worker, msg: mqtt.MQTTMessage) -> None:
        stats = self.stats
        stats.received += 1
        if msg.dup:
            stats.duplicates += 1
        entry = _Pending(msg.mid, msg.qos)
        if msg.qos > 0:
            worker.fifo.append(entry)
        try:
            topic = msg.topic
        except UnicodeDecodeError:
            self._dead_letter(entry, None, bytes(msg.payload), "route", "the MQTT topic is not UTF-8", "")
            return
        route = self.router.route(topic)
        if route is None:
            self._dead_letter(entry, None, bytes(msg.payload), "route", "no mapping rule matches the MQTT topic", topic)
            return
        kafka_topic, key = route
        valid = self._valid_topics.get(kafka_topic)
        if valid is None:
            valid = self._valid_topics[kafka_topic] = bool(_KAFKA_TOPIC.fullmatch(kafka_topic))
        if not valid:
            reason = f"the mapped Kafka topic '{kafka_topic}' is not a valid topic name"
            self._dead_letter(entry, key.encode(), bytes(msg.payload), "route", reason, topic)
            return
        payload = bytes(msg.payload)
        if self.options.format == "json":
            error = object_problem(payload)
            if error is not None:
                self._dead_letter(entry, key.encode(), payload, "decode", error, topic)
                return
        headers: list[tuple[str, str | bytes | None]] = [(H_MQTT_TOPIC, topic.encode())]
        callback = functools.partial(self._delivered, entry, topic)
        self._produce(kafka_topic, payload, key.encode(), headers, callback)

    def _dead_letter(
        self, entry: _Pending, key: bytes | None, value: bytes | None, kind: str, reason: str, topic: str
    ) -> None:
        headers: list[tuple[str, str | bytes | None]] = [
            (H_KIND, kind.encode()),
            (H_MESSAGE, reason.encode()),
            (H_TOPIC, topic.encode()),
            (H_QUERY, self._query.encode()),
        ]
        if value is not None and len(value) > MAX_VALUE_BYTES:
            headers.append((H_TRUNCATED, str(len(value)).encode()))
            value = value[:MAX_VALUE_BYTES]
        log.debug("dead-lettering a message of '%s': %s", topic, reason)
        callback = functools.partial(self._dead_lettered, entry)
        self._produce(self.options.dead_letter_topic, value, key, headers, callback)

    def _produce(
        self,
        topic: str,
        value: bytes | None,
        key: bytes | None,
        headers: list[tuple[str, str | bytes | None]],
        callback: Callable[[Any, Any], None],
    ) -> None:
        while True:
            try:
                self._producer.produce(topic, value, key, headers=headers, on_delivery=callback)
                return
            except BufferError:
                self._producer.poll(0.05)  # local queue full: let deliveries drain
                self._settle()
            except KafkaException as exc:
                raise translate(exc, f"producing to '{topic}'", self._bootstrap) from None

    def _delivered(self, entry: _Pending, mqtt_topic: str, err: Any, msg: Any) -> None:
        if err is None:
            entry.done = True
            self.stats.produced += 1
        elif err.code() in _REJECTED:
            self._rejected.append((entry, msg.key(), msg.value(), f"Kafka refused the record: {err.str()}", mqtt_topic))
        elif self._failure is None:
            self._failure = KafkaError(
                f"delivery to '{msg.topic()}' failed: {err.str()}; unacknowledged MQTT messages stay with the broker",
                hint="create the topic ('streamml topic create') or check the cluster, then restart the bridge",
            )

    def _dead_lettered(self, entry: _Pending, err: Any, msg: Any) -> None:
        if err is None:
            entry.done = True
            self.stats.dead_lettered += 1
        elif self._failure is None:
            self._failure = KafkaError(
                f"delivery to the dead-letter topic '{msg.topic()}' failed: {err.str()}",
                hint="create it or check the cluster, then restart the bridge",
            )

    def _settle(self) -> None:
        """Dead-letter what Kafka refused, raise a delivery failure, and acknowledge each FIFO's done prefix."""
        if self._rejected:
            rejected, self._rejected = self._rejected, []
            for entry, key, value, reason, topic in rejected:
                self._dead_letter(entry, key, value, "produce", reason, topic)
        if self._failure is not None:
            raise self._failure
        pending = 0
        for w in self.workers:
            fifo = w.fifo
            while fifo and fifo[0].done:
                e = fifo.popleft()
                w.client.ack(e.mid, e.qos)
                self.stats.acked += 1
            pending += len(fifo)
        self.stats.pending = pending

    def close(self, drain: bool = True, timeout_s: float = 10.0) -> None:
        """Produce what arrived, wait for its deliveries and acknowledge them (when ``drain``), then disconnect.

        Messages that arrive after the drain stay unacknowledged: the broker re-sends them at the next start.
        """
        try:
            if drain:
                while self.step() > 0:
                    pass
                deadline = time.monotonic() + timeout_s
                while any(w.fifo for w in self.workers) and time.monotonic() < deadline:
                    self._producer.poll(0.05)
                    self._settle()
        finally:
            for w in self.workers:
                w.client.disconnect()
                w.client.loop_stop()
            self._producer.flush(1.0 if drain else 0.0)
