"""Mapping rules of the MQTT bridge, broker-free: matching agrees with paho's MQTT filter matching."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st
from paho.mqtt.client import topic_matches_sub

from streamml.errors import ConfigError
from streamml.ingest.mqtt.rules import Router, covers, parse_rule, parse_rules

LEVEL = st.sampled_from(["a", "b", "car7", "", "x y"])
TOPIC = st.lists(LEVEL, min_size=1, max_size=5).map("/".join)
FILTER_LEVEL = st.sampled_from(["a", "b", "car7", "+", "{p}"])


@st.composite
def filters(draw: st.DrawFn) -> str:
    levels = draw(st.lists(FILTER_LEVEL, min_size=1, max_size=4))
    named = 0
    out = []
    for level in levels:  # placeholders need distinct names
        if level == "{p}":
            named += 1
        out.append(f"{{p{named}}}" if level == "{p}" else level)
    if draw(st.booleans()):
        out.append("#")
    return "/".join(out)


def test_routes_sensor_readings_by_car() -> None:
    rule = parse_rule("vehicles/sensor/data/{car}=sensor-data", key="{car}")
    assert rule.route("vehicles/sensor/data/car7") == ("sensor-data", "car7")
    assert rule.route("vehicles/sensor/data/car7/extra") is None
    assert rule.route("vehicles/sensor/gps/car7") is None


def test_key_defaults_to_the_mqtt_topic_and_templates_fill_topics() -> None:
    rule = parse_rule("fleet/{region}/{car}/#=fleet-{region}")
    assert rule.route("fleet/eu/car1/engine/temp") == ("fleet-eu", "fleet/eu/car1/engine/temp")
    assert rule.subscription == "fleet/+/+/#"


def test_first_matching_rule_wins() -> None:
    router = Router(
        parse_rules(["vehicles/sensor/data/car0=vip", "vehicles/sensor/data/{car}=sensor-data"], ["{topic}", "{car}"])
    )
    assert router.route("vehicles/sensor/data/car0") == ("vip", "vehicles/sensor/data/car0")
    assert router.route("vehicles/sensor/data/car1") == ("sensor-data", "car1")
    assert router.route("other") is None


def test_subscriptions_drop_filters_covered_by_another() -> None:
    router = Router(parse_rules(["a/b=t1", "a/{x}=t2", "a/#=t3", "c/+=t4", "c/{y}=t5"]))
    assert router.subscriptions() == ["a/#", "c/+"]


@pytest.mark.parametrize(
    ("text", "key", "fragment"),
    [
        ("no-equals-sign", None, "invalid mapping"),
        ("a/{car}=t", "{truck}", "unknown placeholder '{truck}'"),
        ("a/{car}=t-{model}", None, "unknown placeholder '{model}'"),
        ("a/#/b=t", None, "level '#' is not valid"),
        ("a/ca+r=t", None, "level 'ca+r' is not valid"),
        ("a/{c}/{c}=t", None, "used twice"),
        ("a/{topic}=t", None, "reserved"),
        ("a/b=bad topic!", None, "not a valid Kafka topic name"),
        ("$share/g/a=t", None, "plain filter"),
    ],
)
def test_invalid_rules_name_the_problem(text: str, key: str | None, fragment: str) -> None:
    with pytest.raises(ConfigError, match="mapping") as info:
        parse_rule(text, key)
    assert fragment in str(info.value)


def test_key_count_must_fit_the_maps() -> None:
    with pytest.raises(ConfigError, match="2 --key options for 3 --map options"):
        parse_rules(["a=t", "b=t", "c=t"], ["{topic}", "{topic}"])
    with pytest.raises(ConfigError, match="no mapping given"):
        parse_rules([])


@given(filters(), TOPIC)
def test_matching_agrees_with_mqtt_filter_semantics(filt: str, topic: str) -> None:
    rule = parse_rule(f"{filt}=t")
    values = rule.match(topic)
    assert (values is not None) == topic_matches_sub(rule.subscription, topic)
    if values is not None:
        levels = topic.split("/")
        for i, part in enumerate(filt.split("/")):
            if part.startswith("{"):
                assert values[part[1:-1]] == levels[i]


@given(filters(), filters(), TOPIC)
def test_a_covering_filter_matches_everything_the_covered_one_does(a: str, b: str, topic: str) -> None:
    fa, fb = parse_rule(f"{a}=t").subscription, parse_rule(f"{b}=t").subscription
    if covers(fa, fb) and topic_matches_sub(fb, topic):
        assert topic_matches_sub(fa, topic)
