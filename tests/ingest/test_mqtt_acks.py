"""The bridge's acknowledgement order, broker-free: a PUBACK only once Kafka confirmed, in arrival order."""

from __future__ import annotations

from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from streamml.ingest.mqtt import BridgeOptions, MqttBridge, parse_rules
from streamml.ingest.mqtt.bridge import _Pending


class RecordingClient:
    def __init__(self) -> None:
        self.acks: list[int] = []

    def ack(self, mid: int, qos: int) -> None:
        self.acks.append(mid)


def bridge_with_recorder() -> tuple[MqttBridge, RecordingClient]:
    bridge = MqttBridge(parse_rules(["a/{x}=t"]), {"bootstrap.servers": "127.0.0.1:9", "log_level": 0}, BridgeOptions())
    recorder = RecordingClient()
    bridge.workers[0].client = recorder  # type: ignore[assignment]
    return bridge, recorder


def test_a_confirmed_message_waits_for_the_ones_before_it() -> None:
    bridge, recorder = bridge_with_recorder()
    entries = [_Pending(mid, 1) for mid in (1, 2, 3)]
    bridge.workers[0].fifo.extend(entries)
    entries[1].done = True
    entries[2].done = True
    bridge._settle()
    assert recorder.acks == []  # message 1 is not in Kafka yet
    entries[0].done = True
    bridge._settle()
    assert recorder.acks == [1, 2, 3]
    assert bridge.stats.acked == 3 and bridge.stats.pending == 0


@given(st.permutations(list(range(30))), st.integers(0, 30))
def test_acks_are_the_confirmed_prefix_in_arrival_order(order: list[int], confirmed: int) -> None:
    bridge, recorder = bridge_with_recorder()
    entries: list[Any] = [_Pending(mid, 1) for mid in range(30)]
    bridge.workers[0].fifo.extend(entries)
    done = set(order[:confirmed])
    for i in order[:confirmed]:  # deliveries confirmed in any order, settled after each
        entries[i].done = True
        bridge._settle()
    prefix = next((i for i in range(30) if i not in done), 30)
    assert recorder.acks == list(range(prefix))
