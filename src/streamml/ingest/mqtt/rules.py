"""Mapping rules of the MQTT bridge: which MQTT topics go to which Kafka topic, under which key.

A rule is ``FILTER=KAFKA_TOPIC``: an MQTT topic filter whose levels may be named placeholders (``{car}``
matches one level, as ``+`` does), ``+`` or, last, ``#``; the Kafka topic and the key are templates over the
placeholders, plus ``{topic}`` (the whole MQTT topic). The key defaults to the MQTT topic, as the Kafka MQTT
connectors do. Rules are ordered: the first one that matches a message's topic wins.

    >>> rule = parse_rule("vehicles/sensor/data/{car}=sensor-data", key="{car}")
    >>> rule.route("vehicles/sensor/data/car7")
    ('sensor-data', 'car7')
    >>> Router([rule]).subscriptions()
    ['vehicles/sensor/data/+']
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from streamml.errors import ConfigError

_PLACEHOLDER = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")
_KAFKA_TOPIC = re.compile(r"^[A-Za-z0-9._-]{1,249}$")
_TOPIC = "topic"


@dataclass(frozen=True)
class Rule:
    """One mapping rule; build it with :func:`parse_rule`."""

    filter: str
    levels: tuple[str | None, ...]  # per level: a placeholder name, None for '+', or a literal
    literal: tuple[bool, ...]
    multi: bool  # ends with '#'
    kafka_topic: str
    key: str | None  # None: the MQTT topic

    @property
    def subscription(self) -> str:
        """The MQTT filter to subscribe with (placeholders become ``+``)."""
        parts = [str(lv) if lit else "+" for lv, lit in zip(self.levels, self.literal, strict=True)]
        return "/".join([*parts, "#"] if self.multi else parts)

    def match(self, topic: str) -> dict[str, str] | None:
        """The placeholders' values when ``topic`` matches, else None."""
        parts = topic.split("/")
        n = len(self.levels)
        if len(parts) < n or (not self.multi and len(parts) != n):
            return None
        if topic.startswith("$") and not (self.literal and self.literal[0]):
            return None  # MQTT: wildcards at the first level never match '$SYS/...'
        values = {_TOPIC: topic}
        for part, level, lit in zip(parts, self.levels, self.literal, strict=False):
            if lit:
                if part != level:
                    return None
            elif level is not None:
                values[level] = part
        return values

    def route(self, topic: str) -> tuple[str, str] | None:
        """``(kafka_topic, key)`` for ``topic``, or None when the rule does not match."""
        values = self.match(topic)
        if values is None:
            return None
        kafka_topic = _fill(self.kafka_topic, values)
        key = topic if self.key is None else _fill(self.key, values)
        return kafka_topic, key


def _fill(template: str, values: dict[str, str]) -> str:
    return _PLACEHOLDER.sub(lambda m: values[m.group(1)], template)


def parse_rule(text: str, key: str | None = None) -> Rule:
    """Parse ``FILTER=KAFKA_TOPIC`` (and an optional key template) into a :class:`Rule`, or raise ConfigError."""
    filt, sep, kafka_topic = text.rpartition("=")  # Kafka topic names cannot contain '='
    filt, kafka_topic = filt.strip(), kafka_topic.strip()
    if not sep or not filt or not kafka_topic:
        raise ConfigError(f"invalid mapping '{text}'", hint="use MQTT_FILTER=KAFKA_TOPIC, e.g. 'cars/{car}=cars'")
    if filt.startswith("$share/"):
        raise ConfigError(f"mapping '{text}': give the plain filter", hint="--workers makes the shared subscription")
    levels: list[str | None] = []
    literal: list[bool] = []
    parts = filt.split("/")
    multi = parts[-1] == "#"
    if multi:
        parts = parts[:-1]
    for part in parts:
        name = _PLACEHOLDER.fullmatch(part)
        if name:
            if name.group(1) == _TOPIC:
                raise ConfigError(f"mapping '{text}': '{{topic}}' is reserved for the whole MQTT topic")
            if name.group(1) in levels:
                raise ConfigError(f"mapping '{text}': placeholder '{{{name.group(1)}}}' is used twice")
            levels.append(name.group(1))
            literal.append(False)
        elif part == "+":
            levels.append(None)
            literal.append(False)
        elif "#" in part or "+" in part or "{" in part or "}" in part:
            raise ConfigError(
                f"mapping '{text}': level '{part}' is not valid",
                hint="a level is a literal, '+', '{name}', or '#' as the last level",
            )
        else:
            levels.append(part)
            literal.append(True)
    known = {lv for lv, lit in zip(levels, literal, strict=True) if lv is not None and not lit} | {_TOPIC}
    for what, template in (("Kafka topic", kafka_topic), ("key", key)):
        if template is None:
            continue
        unknown = set(_PLACEHOLDER.findall(template)) - known
        if unknown:
            raise ConfigError(
                f"mapping '{text}': {what} '{template}' uses unknown placeholder '{{{sorted(unknown)[0]}}}'",
                hint=f"placeholders of this filter: {', '.join('{' + k + '}' for k in sorted(known))}",
            )
        if "{" in _PLACEHOLDER.sub("", template) or "}" in _PLACEHOLDER.sub("", template):
            raise ConfigError(f"mapping '{text}': unbalanced braces in {what} '{template}'")
    if not _KAFKA_TOPIC.fullmatch(_PLACEHOLDER.sub("x", kafka_topic)):
        raise ConfigError(
            f"mapping '{text}': '{kafka_topic}' is not a valid Kafka topic name",
            hint="use letters, digits, '.', '_' and '-'",
        )
    return Rule(filt, tuple(levels), tuple(literal), multi, kafka_topic, key)


def parse_rules(maps: Sequence[str], keys: Sequence[str] = ()) -> list[Rule]:
    """Rules from ``--map`` options; ``keys`` is empty, one key template for all, or one per map."""
    if not maps:
        raise ConfigError("no mapping given", hint="add --map 'MQTT_FILTER=KAFKA_TOPIC'")
    if len(keys) not in (0, 1, len(maps)):
        raise ConfigError(
            f"{len(keys)} --key options for {len(maps)} --map options", hint="give one --key for all, or one per --map"
        )
    per_map: list[str | None] = list(keys) if len(keys) == len(maps) else [keys[0] if keys else None] * len(maps)
    return [parse_rule(m, k) for m, k in zip(maps, per_map, strict=True)]


def covers(general: str, specific: str) -> bool:
    """Whether every topic matched by filter ``specific`` is matched by filter ``general`` too."""
    g, s = general.split("/"), specific.split("/")
    for i, level in enumerate(g):
        if level == "#":
            return True
        if i >= len(s):
            return False
        if level == "+":
            if s[i] == "#":
                return False
            continue
        if level != s[i]:
            return False
    return len(g) == len(s)


class Router:
    """Ordered rules with a per-topic cache: routing a device's topic again is one dictionary lookup."""

    def __init__(self, rules: Sequence[Rule], cache_size: int = 100_000) -> None:
        self.rules = list(rules)
        self._cache: dict[str, tuple[str, str] | None] = {}
        self._cache_size = cache_size

    def route(self, topic: str) -> tuple[str, str] | None:
        """``(kafka_topic, key)`` of the first matching rule, or None."""
        try:
            return self._cache[topic]
        except KeyError:
            pass
        found = None
        for rule in self.rules:
            found = rule.route(topic)
            if found is not None:
                break
        if len(self._cache) >= self._cache_size:
            self._cache.clear()
        self._cache[topic] = found
        return found

    def subscriptions(self) -> list[str]:
        """The fewest MQTT filters that cover every rule (overlapping subscriptions would deliver twice)."""
        filters = list(dict.fromkeys(r.subscription for r in self.rules))
        kept = []
        for i, f in enumerate(filters):
            if not any(j != i and covers(o, f) and (not covers(f, o) or j < i) for j, o in enumerate(filters)):
                kept.append(f)
        return kept
