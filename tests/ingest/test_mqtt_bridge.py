"""The MQTT -> Kafka bridge against a real Mosquitto and a real Kafka: routing, dead letters, and no loss
across a ``kill -9`` of the bridge process."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import orjson
import paho.mqtt.client as mqtt
import pytest
from confluent_kafka import Consumer
from paho.mqtt.enums import CallbackAPIVersion

from streamml.config import Settings
from streamml.ingest.mqtt import BridgeOptions, MqttBridge, parse_rules
from streamml.kafka.mosquitto import LocalMosquitto
from streamml.runtime.deadletter import H_KIND, H_MESSAGE, H_TOPIC, header_dict
from streamml.runtime.observe import is_alive, read_status
from streamml.runtime.session import wait_for

pytestmark = [
    pytest.mark.broker,
    pytest.mark.skipif(not Path("/usr/sbin/mosquitto").exists(), reason="mosquitto is not installed"),
]
STREAMML = str(Path(sys.executable).with_name("streamml"))


@pytest.fixture
def mosquitto(tmp_path: Path) -> Iterator[tuple[str, int]]:
    broker = LocalMosquitto(Settings(home=tmp_path / "home", mqtt_port=0))
    info = broker.start()
    assert info.host_port is not None
    try:
        yield info.host_port
    finally:
        broker.stop()


def publisher(host: str, port: int) -> mqtt.Client:
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="", protocol=mqtt.MQTTv5)
    client.max_inflight_messages_set(200)
    client.connect(host, port)
    client.loop_start()
    return client


def consume(config: dict[str, Any], topic: str, until: Callable[[list[Any]], bool], timeout_s: float = 30) -> list[Any]:
    """Records of ``topic`` from the beginning, read until ``until(records)`` or the deadline."""
    c = Consumer({**config, "group.id": f"check-{topic}-{time.monotonic_ns()}", "auto.offset.reset": "earliest",
                  "enable.auto.commit": False})  # fmt: skip
    c.subscribe([topic])
    records: list[Any] = []
    deadline = time.monotonic() + timeout_s
    try:
        while not until(records) and time.monotonic() < deadline:
            for msg in c.consume(1000, 0.2):
                if msg.error() is None:
                    records.append(msg)
    finally:
        c.close()
    return records


def test_readings_land_keyed_by_car_and_malformed_ones_in_the_dead_letter_topic(
    mosquitto: tuple[str, int], kafka_config: dict[str, Any], topic: Callable[..., str]
) -> None:
    host, port = mosquitto
    data, dlq = topic(prefix="sensor-data"), topic(prefix="dlq")
    rules = parse_rules(["vehicles/sensor/data/{car}=" + data], ["{car}"])
    options = BridgeOptions(host=host, port=port, client_id=f"bridge-{data}", format="json", dead_letter_topic=dlq)
    bridge = MqttBridge(rules, kafka_config, options)
    bridge.start()
    stop = threading.Event()
    runner = threading.Thread(target=bridge.run, args=(stop,))
    runner.start()
    pub = publisher(host, port)
    try:
        infos = [pub.publish("vehicles/sensor/data/car7", orjson.dumps({"seq": i, "speed": 50 + i}), qos=1)
                 for i in range(20)]  # fmt: skip
        infos.append(pub.publish("vehicles/sensor/data/car7", b"{not json", qos=1))
        infos.append(pub.publish("vehicles/sensor/data/car8", b"[1, 2]", qos=1))
        for info in infos:
            info.wait_for_publish(10)
        readings = consume(kafka_config, data, lambda r: len(r) >= 20)
        letters = consume(kafka_config, dlq, lambda r: len(r) >= 2)
    finally:
        stop.set()
        runner.join(30)
        pub.loop_stop()
    assert sorted(orjson.loads(m.value())["seq"] for m in readings) == list(range(20))
    assert {m.key() for m in readings} == {b"car7"}
    assert {header_dict(m.headers())["mqtt.topic"] for m in readings} == {"vehicles/sensor/data/car7"}
    by_value = {m.value(): header_dict(m.headers()) for m in letters}
    assert set(by_value) == {b"{not json", b"[1, 2]"}
    assert by_value[b"{not json"][H_TOPIC] == "vehicles/sensor/data/car7"
    assert by_value[b"{not json"][H_KIND] == "decode"
    assert "invalid JSON at byte" in by_value[b"{not json"][H_MESSAGE]
    assert "expected a JSON object, got array" in by_value[b"[1, 2]"][H_MESSAGE]
    stats = bridge.stats
    assert (stats.received, stats.produced, stats.dead_lettered, stats.acked) == (22, 20, 2, 22)


def test_no_message_is_lost_when_the_bridge_is_killed_mid_stream(
    mosquitto: tuple[str, int], kafka_config: dict[str, Any], kafka_settings: Settings, topic: Callable[..., str],
    tmp_path: Path,
) -> None:  # fmt: skip
    host, port = mosquitto
    data = topic(prefix="sensor-data")
    env = {k: v for k, v in os.environ.items() if not k.startswith("STREAMML_")}
    env.update({"STREAMML_BOOTSTRAP": str(kafka_settings.bootstrap), "STREAMML_HOME": str(tmp_path / "cli-home")})
    cmd = [STREAMML, "mqtt", "bridge", "--mqtt", f"{host}:{port}", "--map", "vehicles/sensor/data/{car}=" + data,
           "--key", "{car}", "--client-id", f"bridge-{data}", "--format", "json"]  # fmt: skip

    def start_bridge() -> subprocess.Popen[str]:
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
        assert proc.stdout is not None
        line = proc.stdout.readline()  # the bridge says so once its subscription is confirmed
        assert line.startswith("bridging MQTT"), (line, proc.stderr.read() if proc.stderr else "")
        return proc

    total = 3000
    bridge = start_bridge()
    pub = publisher(host, port)
    published: list[mqtt.MQTTMessageInfo] = []
    killed = threading.Event()

    def publish_all() -> None:
        for i in range(total):
            if i == total // 2:
                killed.wait(60)  # the second half is published while the bridge is down
            payload = orjson.dumps({"car": f"car{i % 10}", "seq": i})
            published.append(pub.publish(f"vehicles/sensor/data/car{i % 10}", payload, qos=1))
            if i < total // 2:
                time.sleep(0.001)  # a stream, not one burst: the kill lands while it flows

    sender = threading.Thread(target=publish_all)
    sender.start()
    try:
        consume(kafka_config, data, lambda r: len(r) >= 300)
        bridge.send_signal(signal.SIGKILL)  # mid-stream: some records are in Kafka, but not acknowledged yet
        bridge.wait(10)
        killed.set()
        sender.join(60)
        for info in published:
            info.wait_for_publish(30)  # the broker has every message: it queues them for the bridge's session
        bridge = start_bridge()
        seen = consume(kafka_config, data, lambda r: len({orjson.loads(m.value())["seq"] for m in r}) >= total)
        status = Settings(bootstrap=kafka_settings.bootstrap, service_id="streamml")
        shown = wait_for(lambda: [q for w in read_status(status) if is_alive(w) for q in w["queries"]
                                  if q["query"] == f"mqtt-bridge/bridge-{data}" and q["records_out"] > 0], 30, 0.5)  # fmt: skip
        assert shown, "the running bridge is listed with its counters on the status topic"
    finally:
        killed.set()
        bridge.send_signal(signal.SIGTERM)
        bridge.wait(30)
        pub.loop_stop()
    seqs = [orjson.loads(m.value())["seq"] for m in seen]
    assert set(seqs) == set(range(total))
    assert all(m.key() == f"car{orjson.loads(m.value())['seq'] % 10}".encode() for m in seen)
    print(f"duplicates after kill -9: {len(seqs) - total}")  # at-least-once: MQTT allows re-delivery


def test_workers_share_the_subscription_and_every_message_lands_once(
    mosquitto: tuple[str, int], kafka_config: dict[str, Any], topic: Callable[..., str]
) -> None:
    host, port = mosquitto
    data = topic(prefix="sensor-data")
    rules = parse_rules(["vehicles/sensor/data/{car}=" + data], ["{car}"])
    options = BridgeOptions(host=host, port=port, client_id=f"bridge-{data}", workers=2, dead_letter_topic=data)
    bridge = MqttBridge(rules, kafka_config, options)
    bridge.start()
    stop = threading.Event()
    runner = threading.Thread(target=bridge.run, args=(stop,))
    runner.start()
    pub = publisher(host, port)
    try:
        infos = [pub.publish(f"vehicles/sensor/data/car{i % 5}", b"%d" % i, qos=1) for i in range(400)]
        for info in infos:
            info.wait_for_publish(10)
        records = consume(kafka_config, data, lambda r: len(r) >= 400)
    finally:
        stop.set()
        runner.join(30)
        pub.loop_stop()
    assert sorted(int(m.value()) for m in records) == list(range(400))
    assert all(m.key() == b"car%d" % (int(m.value()) % 5) for m in records)
    assert bridge.stats.acked == 400 and bridge.stats.dead_lettered == 0


def test_a_missing_target_topic_is_one_clear_error_at_start(
    mosquitto: tuple[str, int], kafka_settings: Settings, unique: Callable[[str], str], tmp_path: Path
) -> None:
    host, port = mosquitto
    missing = unique("missing")
    env = {k: v for k, v in os.environ.items() if not k.startswith("STREAMML_")}
    env.update({"STREAMML_BOOTSTRAP": str(kafka_settings.bootstrap), "STREAMML_HOME": str(tmp_path / "cli-home")})
    cmd = [STREAMML, "mqtt", "bridge", "--mqtt", f"{host}:{port}", "--map", f"vehicles/{{car}}={missing}"]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=60, check=False)
    assert proc.returncode == 4
    assert f"topic '{missing}' does not exist" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1
