"""The schema registry as the Avro format needs it: register under a subject, fetch by id, fetch the latest.

A thin adapter over confluent-kafka's maintained client (``confluent_kafka.schema_registry``: basic auth, TLS,
retries, caching of ids and schemas), so a stream talks to the registry once per schema, not once per record.
It speaks in parsed Avro schemas (a record's dict, or a primitive or union) and turns every failure into a
:class:`FormatError` naming the URL and the subject or id. The client is imported with the first registry: a
worker without Avro streams never loads it.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from streamml.errors import FormatError

if TYPE_CHECKING:
    from confluent_kafka.schema_registry import SchemaRegistryClient as _Client

__all__ = ["SchemaRegistryClient", "UnknownSchemaError", "subject_name"]

#: the registry's error codes for an id, a subject or a version it does not have
_NOT_FOUND_CODES = frozenset({40401, 40402, 40403})


class UnknownSchemaError(FormatError):
    """The registry has no schema with the requested id, or no version under the requested subject."""


def subject_name(topic: str, *, is_key: bool = False) -> str:
    """The default (TopicNameStrategy) subject of a topic's values or keys: ``<topic>-value``/``-key``."""
    return f"{topic}-{'key' if is_key else 'value'}"


class SchemaRegistryClient:
    """Register and fetch Avro schemas; thread-safe, cached by the underlying client.

    ``auth`` is a user name and password (basic auth); ``ca_location`` a CA bundle for an ``https`` registry.
    """

    def __init__(
        self,
        url: str,
        *,
        timeout: float = 10.0,
        auth: tuple[str, str] | None = None,
        ca_location: str | None = None,
        retries: int = 1,
    ) -> None:
        from confluent_kafka.schema_registry import SchemaRegistryClient as Client

        self.url = url.rstrip("/")
        conf: dict[str, Any] = {"url": self.url, "timeout": timeout, "max.retries": retries}
        if auth is not None:
            conf["basic.auth.user.info"] = f"{auth[0]}:{auth[1]}"
        if ca_location is not None:
            conf["ssl.ca.location"] = ca_location
        try:
            self._client: _Client = Client(conf)
        except (ValueError, TypeError) as exc:
            raise FormatError(f"schema registry {self.url}: {exc}") from exc

    def register(self, subject: str, schema: Any) -> int:
        """Register ``schema`` (parsed, or JSON text) under ``subject`` (idempotent) and return its global id."""
        from confluent_kafka.schema_registry import Schema

        text = schema if isinstance(schema, str) else json.dumps(schema, sort_keys=True)
        return int(
            self._call(
                lambda: self._client.register_schema(subject, Schema(text, "AVRO")),
                f"register a schema under subject '{subject}'",
            )
        )

    def get_schema(self, schema_id: int) -> Any:
        """The schema with global id ``schema_id``; :class:`UnknownSchemaError` when there is none."""
        found = self._call(lambda: self._client.get_schema(schema_id), f"fetch schema id {schema_id}")
        return _parse(found.schema_str, found.schema_type, self.url)

    def latest(self, subject: str) -> tuple[int, Any]:
        """The id and schema of the latest version under ``subject``."""
        found = self._call(
            lambda: self._client.get_latest_version(subject), f"fetch the latest schema of subject '{subject}'"
        )
        assert found.schema is not None and found.schema_id is not None
        return int(found.schema_id), _parse(found.schema.schema_str, found.schema.schema_type, self.url)

    def close(self) -> None:
        """Close the HTTP connection pool."""
        self._client.__exit__()

    def __enter__(self) -> SchemaRegistryClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _call(self, call: Any, what: str) -> Any:
        from confluent_kafka.schema_registry.error import SchemaRegistryError

        try:
            return call()
        except SchemaRegistryError as exc:
            if exc.http_status_code == 404 or exc.error_code in _NOT_FOUND_CODES:
                raise UnknownSchemaError(f"schema registry {self.url}: cannot {what}: not found") from None
            raise FormatError(
                f"schema registry {self.url}: cannot {what}: HTTP {exc.http_status_code} {exc.error_message}"
            ) from None
        except FormatError:
            raise
        except Exception as exc:  # transport errors (refused, timed out, TLS) come from the HTTP library
            raise FormatError(f"schema registry {self.url}: cannot {what}: {exc or type(exc).__name__}") from exc


def _parse(text: str | None, schema_type: str | None, url: str) -> Any:
    if (schema_type or "AVRO") != "AVRO":
        raise FormatError(f"schema registry {url}: schema is {schema_type}, only AVRO is supported")
    try:
        parsed = json.loads(text or "")
    except ValueError as exc:
        raise FormatError(f"schema registry {url}: response holds no valid schema") from exc
    if isinstance(parsed, str):  # a primitive schema such as "string"
        return {"type": parsed}
    if not isinstance(parsed, dict | list):
        raise FormatError(f"schema registry {url}: not an Avro schema: {parsed!r}")
    return parsed
