"""Sending the simulated car fleet (:mod:`streamml.ingest.cars`) to MQTT or Kafka, at a rate, for a count or a time.

MQTT: one paho-mqtt client (callback API version 2) publishes every reading with QoS 1 to
``vehicles/sensor/data/<car>`` without waiting for each PUBACK in turn: the acknowledgements are collected as
they come and all are awaited before the client disconnects. Kafka: the readings go through the project's
batched producer, keyed by car, flushed at the end.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from typing import Any, Protocol

import pyarrow as pa

from streamml.errors import BrokerError, InputError
from streamml.formats.json import JsonFormat
from streamml.ingest.cars import CarFleet, kafka_records, ksql_spelling, mqtt_messages, published
from streamml.ingest.replay import RateLimiter
from streamml.kafka.producer import Producer

log = logging.getLogger(__name__)


class Sink(Protocol):
    def send(self, table: pa.Table) -> None: ...


def parse_mqtt_address(text: str, default_port: int = 1883) -> tuple[str, int]:
    """``HOST[:PORT]`` -> ``(host, port)``."""
    host, sep, port_text = text.strip().rpartition(":")
    if not sep:
        host, port_text = text.strip(), str(default_port)
    port = int(port_text) if port_text.isdigit() else -1
    if not host or not 0 < port < 65536:
        raise InputError(f"invalid MQTT address '{text}'", hint="use HOST:PORT, e.g. 127.0.0.1:1883")
    return host, port


#: readings published but not acknowledged yet, at most (a packet id each, of 65,535)
MAX_UNACKNOWLEDGED = 20_000


class MqttPublisher:
    """Publishes readings with QoS 1; :meth:`close` returns once the broker acknowledged every one."""

    def __init__(
        self,
        host: str,
        port: int,
        *,
        client_id: str = "",
        max_inflight: int = 1000,
        ksql_names: bool = False,
        timeout_s: float = 10.0,
    ) -> None:
        try:
            import paho.mqtt.client as mqtt
        except ImportError:
            raise InputError("publishing to MQTT needs paho-mqtt", hint="pip install 'paho-mqtt>=2.1'") from None
        self._mqtt = mqtt
        self.address = f"{host}:{port}"
        self.timeout_s = timeout_s
        self.ksql_names = ksql_names
        self.sent = 0
        self._fmt: JsonFormat | None = None
        self._pending: deque[Any] = deque()
        self._connected = threading.Event()
        self._refused: str | None = None
        self._client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv311)
        self._client.max_inflight_messages_set(max_inflight)
        self._client.on_connect = self._on_connect
        try:
            self._client.connect(host, port, keepalive=30)
        except OSError as exc:
            raise BrokerError(
                f"cannot reach the MQTT broker at {self.address}: {exc}", hint="start one with: streamml mqtt start"
            ) from None
        self._client.loop_start()
        if not self._connected.wait(timeout_s) or self._refused:
            self._client.loop_stop()
            reason = self._refused or f"no CONNACK within {timeout_s:.0f} s"
            raise BrokerError(f"the MQTT broker at {self.address} refused the connection: {reason}")

    def _on_connect(self, client: Any, userdata: Any, flags: Any, reason_code: Any, properties: Any) -> None:
        if reason_code.is_failure:
            self._refused = str(reason_code)
        self._connected.set()

    def send(self, table: pa.Table) -> None:
        """Publish every reading of ``table`` to its car's topic (QoS 1), not waiting for the acknowledgements."""
        out = published(table)
        if self.ksql_names:
            out = ksql_spelling(out)
        self._fmt = self._fmt or JsonFormat(out.schema)
        publish = self._client.publish
        pending = self._pending
        ok = self._mqtt.MQTT_ERR_SUCCESS
        for topic, payload in mqtt_messages(out, self._fmt):
            if len(pending) >= MAX_UNACKNOWLEDGED:  # MQTT has 65,535 packet ids: wait for the oldest first
                self._settle_oldest()
            info = publish(topic, payload, qos=1)
            if info.rc != ok:
                raise BrokerError(f"publishing to '{topic}' at {self.address}: {self._mqtt.error_string(info.rc)}")
            pending.append(info)
        self.sent += table.num_rows
        while pending and pending[0].is_published():  # forget what the broker has acknowledged
            pending.popleft()

    def _settle_oldest(self) -> None:
        info = self._pending[0]
        try:
            info.wait_for_publish(self.timeout_s)
            done = info.is_published()
        except (RuntimeError, ValueError) as exc:
            raise BrokerError(f"publishing to {self.address}: {exc}") from None
        if not done:
            raise BrokerError(f"{self.address} acknowledged no reading within {self.timeout_s:.0f} s")
        self._pending.popleft()

    def close(self) -> None:
        """Wait for the PUBACK of every reading (raise :class:`BrokerError` after the timeout), then disconnect."""
        deadline = time.monotonic() + self.timeout_s
        try:
            while self._pending:
                info = self._pending[0]
                left = deadline - time.monotonic()
                try:
                    if left > 0:
                        info.wait_for_publish(left)
                    done = info.is_published()
                except (RuntimeError, ValueError) as exc:
                    raise BrokerError(f"publishing to {self.address}: {exc}") from None
                if not done:
                    raise BrokerError(
                        f"{len(self._pending)} readings were not acknowledged by {self.address} "
                        f"within {self.timeout_s:.0f} s"
                    )
                self._pending.popleft()
        finally:
            self._client.disconnect()
            self._client.loop_stop()


class KafkaSink:
    """Produces readings to a Kafka topic as JSON, keyed by car, through the batched producer."""

    def __init__(self, producer: Producer, topic: str, *, ksql_names: bool = False) -> None:
        self.producer = producer
        self.topic = topic
        self.ksql_names = ksql_names
        self._fmt: JsonFormat | None = None

    def send(self, table: pa.Table) -> None:
        out = published(table)
        if self.ksql_names:
            out = ksql_spelling(out)
        self._fmt = self._fmt or JsonFormat(out.schema)
        values, keys = kafka_records(out, self._fmt)
        self.producer.produce_batch(self.topic, values, keys)


def fleet_batches(
    fleet: CarFleet,
    count: int | None,
    rate: float | None,
    duration_s: float | None = None,
    clock: Callable[[], float] = time.monotonic,
) -> Iterator[pa.Table]:
    """Readings in whole steps, paced at ``rate`` readings/s by the wall clock; ``count`` readings in all
    (the last step cut short) or, with ``duration_s``, as many as fit in that time; endless when both are None.
    """
    limiter = RateLimiter(rate, clock)
    steps = max(1, limiter.chunk_size(max(10_000 // fleet.cars, 1) * fleet.cars) // fleet.cars)
    deadline = None if duration_s is None else clock() + duration_s
    sent = 0
    while count is None or sent < count:
        if deadline is not None and clock() >= deadline:
            return
        table = fleet.readings(steps)
        if count is not None and sent + table.num_rows > count:
            table = table.slice(0, count - sent)
        yield table
        sent += table.num_rows
        limiter.wait(table.num_rows)


def stream_fleet(sink: Sink, batches: Iterable[pa.Table], on_batch: Callable[[int], None] | None = None) -> int:
    """Send every batch to ``sink``; returns the number of readings sent."""
    sent = 0
    for table in batches:
        sink.send(table)
        sent += table.num_rows
        log.debug("sent %d readings (%d in all)", table.num_rows, sent)
        if on_batch is not None:
            on_batch(table.num_rows)
    return sent
