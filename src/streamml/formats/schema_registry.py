"""A small client for a Confluent-compatible schema registry (the three calls the Avro format needs).

Schemas are cached by id and registrations by subject and schema, so a stream talks to the registry once
per schema, not once per record. Failures raise :class:`FormatError` naming the URL and the subject or id.
"""

from __future__ import annotations

import json
import threading
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from streamml.errors import FormatError

if TYPE_CHECKING:  # httpx loads with the first client: a worker without Avro streams never needs it
    import httpx

__all__ = ["SchemaRegistryClient", "UnknownSchemaError", "subject_name"]

_CONTENT_TYPE = "application/vnd.schemaregistry.v1+json"


class UnknownSchemaError(FormatError):
    """The registry has no schema with the requested id, or no version under the requested subject."""


def subject_name(topic: str, *, is_key: bool = False) -> str:
    """The default (TopicNameStrategy) subject of a topic's values or keys: ``<topic>-value``/``-key``."""
    return f"{topic}-{'key' if is_key else 'value'}"


class SchemaRegistryClient:
    """Register and fetch Avro schemas over the registry's REST API; thread-safe, with caches."""

    def __init__(
        self,
        url: str,
        *,
        timeout: float = 10.0,
        auth: tuple[str, str] | None = None,
        client: httpx.Client | None = None,
    ) -> None:
        import httpx

        self.url = url.rstrip("/")
        self._client = client or httpx.Client(
            base_url=self.url, timeout=timeout, auth=auth, headers={"Accept": _CONTENT_TYPE}
        )
        self._owns_client = client is None
        self._lock = threading.Lock()
        self._by_id: dict[int, dict[str, Any]] = {}
        self._ids: dict[tuple[str, str], int] = {}

    def register(self, subject: str, schema: dict[str, Any] | str) -> int:
        """Register ``schema`` under ``subject`` (idempotent) and return its global id."""
        text = schema if isinstance(schema, str) else json.dumps(schema, sort_keys=True)
        key = (subject, text)
        with self._lock:
            if key in self._ids:
                return self._ids[key]
        body = self._request(
            "POST",
            f"/subjects/{quote(subject, safe='')}/versions",
            what=f"register a schema under subject '{subject}'",
            json={"schema": text},
        )
        schema_id = int(body["id"])
        with self._lock:
            self._ids[key] = schema_id
            self._by_id.setdefault(schema_id, json.loads(text))
        return schema_id

    def get_schema(self, schema_id: int) -> dict[str, Any]:
        """The schema with global id ``schema_id``; :class:`UnknownSchemaError` when there is none."""
        with self._lock:
            if schema_id in self._by_id:
                return self._by_id[schema_id]
        body = self._request("GET", f"/schemas/ids/{schema_id}", what=f"fetch schema id {schema_id}")
        schema = _parse_schema_text(body, self.url)
        with self._lock:
            self._by_id[schema_id] = schema
        return schema

    def latest(self, subject: str) -> tuple[int, dict[str, Any]]:
        """The id and schema of the latest version under ``subject``."""
        body = self._request(
            "GET",
            f"/subjects/{quote(subject, safe='')}/versions/latest",
            what=f"fetch the latest schema of subject '{subject}'",
        )
        schema_id = int(body["id"])
        schema = _parse_schema_text(body, self.url)
        with self._lock:
            self._by_id[schema_id] = schema
        return schema_id, schema

    def close(self) -> None:
        """Close the HTTP connection pool (when this client created it)."""
        if self._owns_client:
            self._client.close()

    def __enter__(self) -> SchemaRegistryClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _request(self, method: str, path: str, *, what: str, json: Any = None) -> dict[str, Any]:
        import httpx

        headers = {"Content-Type": _CONTENT_TYPE} if json is not None else None
        try:
            response = self._client.request(method, path, json=json, headers=headers)
        except httpx.HTTPError as exc:
            raise FormatError(f"schema registry {self.url}: cannot {what}: {exc}") from exc
        if response.status_code == 404:
            raise UnknownSchemaError(f"schema registry {self.url}: cannot {what}: not found")
        if response.is_error:
            raise FormatError(
                f"schema registry {self.url}: cannot {what}: HTTP {response.status_code} {_message(response)}"
            )
        try:
            body = response.json()
        except ValueError as exc:
            raise FormatError(f"schema registry {self.url}: cannot {what}: response is not JSON") from exc
        if not isinstance(body, dict):
            raise FormatError(f"schema registry {self.url}: cannot {what}: unexpected response {body!r}")
        return body


def _message(response: httpx.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        return response.text[:200]
    if isinstance(body, dict) and "message" in body:
        return str(body["message"])
    return str(body)[:200]


def _parse_schema_text(body: dict[str, Any], url: str) -> dict[str, Any]:
    schema_type = body.get("schemaType", "AVRO")
    if schema_type != "AVRO":
        raise FormatError(f"schema registry {url}: schema is {schema_type}, only AVRO is supported")
    try:
        parsed = json.loads(body["schema"])
    except (KeyError, TypeError, ValueError) as exc:
        raise FormatError(f"schema registry {url}: response holds no valid schema") from exc
    if isinstance(parsed, str):  # a primitive schema such as "string"
        return {"type": parsed}
    if not isinstance(parsed, dict):
        raise FormatError(f"schema registry {url}: only record schemas are supported, got {parsed!r}")
    return parsed
