"""The MQTT -> Kafka bridge: mapping rules (:mod:`.rules`) and the no-loss bridge (:mod:`.bridge`)."""

from streamml.ingest.mqtt.bridge import BridgeOptions, BridgeStats, MqttBridge
from streamml.ingest.mqtt.rules import Router, Rule, parse_rule, parse_rules

__all__ = ["BridgeOptions", "BridgeStats", "MqttBridge", "Router", "Rule", "parse_rule", "parse_rules"]
