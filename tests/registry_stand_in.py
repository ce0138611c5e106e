"""A tiny in-process stand-in for a Confluent schema registry (the `registry_server` fixture).

It serves only the three calls the Avro format makes through confluent-kafka's client (register under a
subject, fetch by id, fetch the latest version of a subject), with the registry's status codes and error
bodies; query parameters are accepted and ignored.
"""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import unquote

import pytest


class _Registry:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.schemas: dict[int, str] = {}
        self.ids_by_text: dict[str, int] = {}
        self.subjects: dict[str, list[int]] = {}
        self.requests: list[tuple[str, str]] = []

    def register(self, subject: str, text: str) -> int:
        with self.lock:
            canonical = json.dumps(json.loads(text), sort_keys=True)
            schema_id = self.ids_by_text.get(canonical)
            if schema_id is None:
                schema_id = len(self.schemas) + 1
                self.schemas[schema_id] = canonical
                self.ids_by_text[canonical] = schema_id
            versions = self.subjects.setdefault(subject, [])
            if schema_id not in versions:
                versions.append(schema_id)
            return schema_id


def _handler(registry: _Registry) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:
            pass

        def _send(self, status: int, body: dict[str, Any]) -> None:
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/vnd.schemaregistry.v1+json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_POST(self) -> None:
            registry.requests.append(("POST", self.path))
            match = re.fullmatch(r"/subjects/([^/]+)/versions", _path(self.path))
            if not match:
                self._send(404, {"error_code": 404, "message": "HTTP 404 Not Found"})
                return
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            schema_id = registry.register(unquote(match.group(1)), body["schema"])
            self._send(200, {"id": schema_id})

        def do_GET(self) -> None:
            registry.requests.append(("GET", self.path))
            path = _path(self.path)
            match = re.fullmatch(r"/schemas/ids/(\d+)", path)
            if match:
                text = registry.schemas.get(int(match.group(1)))
                if text is None:
                    self._send(404, {"error_code": 40403, "message": "Schema not found"})
                else:
                    self._send(200, {"schema": text})
                return
            match = re.fullmatch(r"/subjects/([^/]+)/versions/latest", path)
            if match and registry.subjects.get(unquote(match.group(1))):
                versions = registry.subjects[unquote(match.group(1))]
                schema_id = versions[-1]
                body = {
                    "subject": unquote(match.group(1)),
                    "version": len(versions),
                    "id": schema_id,
                    "schema": registry.schemas[schema_id],
                }
                self._send(200, body)
                return
            self._send(404, {"error_code": 40401, "message": "Subject not found"})

    return Handler


def _path(target: str) -> str:
    return target.split("?", 1)[0]


@pytest.fixture
def registry_server() -> Iterator[tuple[str, _Registry]]:
    """A running stand-in registry: its base URL and its state."""
    registry = _Registry()
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(registry))
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", registry
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
