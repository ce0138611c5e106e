"""Where the Kafka cluster is: a configured bootstrap address, or the local broker if it runs."""

from __future__ import annotations

import logging
from typing import Any

from confluent_kafka import KafkaException

from streamml.config import Settings
from streamml.errors import KafkaError, TopicNotFoundError
from streamml.kafka.broker import LocalBroker
from streamml.kafka.client_log import AggregatingLog

#: every client logs through one aggregator, so a broker that is down costs a line per change, not per retry
client_log = AggregatingLog(logging.getLogger("streamml.kafka.client"))


def resolve_bootstrap(settings: Settings) -> str:
    """The bootstrap servers to use: ``settings.bootstrap``, else the running local broker's address."""
    if settings.bootstrap:
        return settings.bootstrap
    info = LocalBroker(settings).status()
    if info.running and info.bootstrap:
        return info.bootstrap
    raise KafkaError(
        f"no Kafka cluster configured and the local broker is not running ({settings.home_searched()})",
        hint="start it with 'streamml kafka start' or set STREAMML_BOOTSTRAP",
    )


def client_config(settings: Settings, **overrides: Any) -> dict[str, Any]:
    """librdkafka configuration for a new client of the resolved cluster."""
    config = settings.client_config(resolve_bootstrap(settings), **overrides)
    config.setdefault("logger", client_log)
    return config


def translate(exc: BaseException, action: str, bootstrap: str | None = None) -> KafkaError:
    """Turn a confluent-kafka exception into a :class:`KafkaError` with one actionable line."""
    err = exc.args[0] if isinstance(exc, KafkaException) and exc.args else None
    name = err.name() if err is not None and hasattr(err, "name") else ""
    text = err.str() if err is not None and hasattr(err, "str") else str(exc)
    if name in {"_TRANSPORT", "_TIMED_OUT", "_ALL_BROKERS_DOWN"} or "timed out" in text.lower():
        where = f" at {bootstrap}" if bootstrap else ""
        return KafkaError(
            f"{action}: cannot reach Kafka{where} ({text})",
            hint="is the broker running? 'streamml kafka status', or check STREAMML_BOOTSTRAP",
        )
    if name in {"UNKNOWN_TOPIC_OR_PART", "_UNKNOWN_TOPIC"}:
        return KafkaError(f"{action}: unknown topic ({text})", hint="list topics with 'streamml topic list'")
    return KafkaError(f"{action}: {text}")


__all__ = ["TopicNotFoundError", "client_config", "resolve_bootstrap", "translate"]
