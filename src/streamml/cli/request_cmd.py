"""``streamml request``: one request over Kafka, its reply printed (the request/reply pattern, by hand)."""

from __future__ import annotations

import sys
import time

import orjson
import typer

from streamml.cli.state import state
from streamml.errors import InputError


def request(
    ctx: typer.Context,
    target: str = typer.Argument(..., help="Request topic (or a model scored by a query in the catalog)."),
    reply: str | None = typer.Option(None, "--reply", help="Reply topic (default: the sink of the query reading it)."),
    json_value: str | None = typer.Option(None, "--json", help="The request as a JSON object (default: stdin)."),
    timeout: float = typer.Option(30.0, "--timeout", min=0.1, help="Seconds to wait for the reply."),
) -> None:
    """Send one JSON request with a correlation id and print its reply as JSON, with the latency on stderr."""
    from streamml.serve.requests import Client

    text = json_value if json_value is not None else sys.stdin.read()
    try:
        record = orjson.loads(text)
    except orjson.JSONDecodeError as exc:
        raise InputError(f"the request is not JSON: {exc}", hint='e.g. --json \'{"ID": 1, "X": 0.5}\'') from None
    if not isinstance(record, dict):
        raise InputError("the request must be a JSON object", hint='e.g. --json \'{"ID": 1, "X": 0.5}\'')
    with Client(state(ctx).settings) as client:
        request_topic, reply_topic = client.route(target, reply)
        started = time.perf_counter()
        answer = client.predict(request_topic, record, reply=reply_topic, timeout=timeout)
        elapsed_ms = (time.perf_counter() - started) * 1000
    text = answer.decode(errors="replace") if isinstance(answer, bytes) else orjson.dumps(answer).decode()
    sys.stdout.write(text + "\n")
    sys.stderr.write(f"reply on {reply_topic} in {elapsed_ms:.1f} ms\n")
