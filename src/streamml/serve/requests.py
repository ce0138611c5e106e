"""Request/reply over Kafka: ask a model through one topic, get its answer on another.

A request is a record on the request topic with two headers, the names Spring Kafka's ``ReplyingKafkaTemplate``
uses: ``kafka_correlationId`` (16 random bytes) and ``kafka_replyTopic``. The model side is an ordinary
persistent query over the request topic (``CREATE STREAM replies AS SELECT id, PREDICT('iris', ...) FROM
requests``); every query copies those headers from a request to the records it writes for it, inside its
transaction, so each request gets its reply exactly once.

:class:`Client` produces requests and reads the reply topic with one consumer (read committed, from the
topic's end when it is first needed), handing each reply to the call waiting for its correlation id; replies
to other clients are skipped. Calls are thread-safe and can be many at once: ``predict`` waits for one,
``predict_batch`` sends many and waits for all, ``predict_async`` is awaitable.
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import threading
import time
from collections.abc import Mapping, Sequence
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from typing import Any

import orjson

from streamml.config import Settings, load_settings
from streamml.errors import InputError, KafkaError, StreamMLError, TopicNotFoundError
from streamml.kafka import Admin, BatchConsumer, Producer, client_config
from streamml.kafka.headers import H_CORRELATION_ID, H_REPLY_TOPIC
from streamml.runtime.catalog_store import catalog_engine

log = logging.getLogger(__name__)

_PREDICT = re.compile(r"PREDICT\s*\(\s*'([^':@]+)", re.IGNORECASE)


class RequestTimeout(StreamMLError):
    """No reply within the time a call allowed."""


class Client:
    """Request/reply over Kafka (see the module docstring). ``with Client() as c: c.predict("iris", {...})``."""

    def __init__(self, settings: Settings | None = None, *, poll_s: float = 0.05) -> None:
        self.settings = settings or load_settings()
        self.config = client_config(self.settings)
        self.poll_s = poll_s
        self._producer = Producer(self.config, properties={"linger.ms": 1})
        self._lock = threading.Lock()
        self._pending: dict[bytes, Future[Any]] = {}
        self._readers: dict[str, _ReplyReader] = {}
        self._routes: dict[tuple[str, str | None], tuple[str, str]] = {}
        self._closed = False

    # -- calls ------------------------------------------------------------------------------------------------
    def predict(
        self, target: str, record: Mapping[str, Any], *, reply: str | None = None, timeout: float = 30.0
    ) -> Any:
        """Send ``record`` to ``target`` (a request topic, or a model scored by a query in the catalog) and
        return its reply's value (a dict for JSON); :class:`RequestTimeout` after ``timeout`` seconds."""
        return self.predict_batch(target, [record], reply=reply, timeout=timeout)[0]

    def predict_batch(
        self, target: str, records: Sequence[Mapping[str, Any]], *, reply: str | None = None, timeout: float = 30.0
    ) -> list[Any]:
        """Send every record at once and return their replies, in order."""
        request_topic, reply_topic = self.route(target, reply)
        calls = self._send(request_topic, reply_topic, records)
        deadline = time.monotonic() + timeout
        replies = []
        for i, (_, future) in enumerate(calls):
            try:
                replies.append(future.result(max(0.0, deadline - time.monotonic())))
            except FutureTimeout:
                raise self._timeout([cid for cid, _ in calls[i:]], request_topic, reply_topic, timeout) from None
        return replies

    async def predict_async(
        self, target: str, record: Mapping[str, Any], *, reply: str | None = None, timeout: float = 30.0
    ) -> Any:
        """:meth:`predict`, awaitable: the event loop runs on while the reply is on its way."""
        request_topic, reply_topic = await asyncio.to_thread(self.route, target, reply)
        ((cid, future),) = self._send(request_topic, reply_topic, [record])
        try:
            return await asyncio.wait_for(asyncio.wrap_future(future), timeout)
        except TimeoutError:
            raise self._timeout([cid], request_topic, reply_topic, timeout) from None

    # -- routing ----------------------------------------------------------------------------------------------
    def route(self, target: str, reply: str | None = None) -> tuple[str, str]:
        """(request topic, reply topic) for ``target``: with ``reply``, ``target`` is the request topic as
        given; else the one persistent query of the catalog reading topic/stream ``target`` (or calling
        ``PREDICT('target', ...)``) gives both."""
        key = (target, reply)
        with self._lock:
            known = self._routes.get(key)
        if known is not None:
            return known
        if reply is not None:
            found = (target, reply)
            if not Admin(self.config, timeout_s=self.settings.request_timeout_s).exists(target):
                raise TopicNotFoundError(target)
        else:
            found = self._route_from_catalog(target)
        with self._lock:
            self._routes[key] = found
        return found

    def _route_from_catalog(self, target: str) -> tuple[str, str]:
        queries = [p for p in catalog_engine(self.settings).queries.values() if p.sink is not None and p.sources]
        name = target.upper()
        reading = [p for p in queries if any(name in (s.name.upper(), s.topic.upper()) for s in p.sources)]
        if not reading:
            reading = [p for p in queries if any(m.upper() == name for m in _PREDICT.findall(p.text))]
        if len(reading) != 1:
            what = "no persistent query reads" if not reading else f"{len(reading)} persistent queries read"
            hint = "name the request topic and its reply topic: predict(topic, record, reply=...)"
            raise InputError(f"{what} '{target}' or scores model '{target}'", hint=hint)
        plan = reading[0]
        assert plan.sink is not None
        return plan.sources[0].topic, plan.sink.topic

    # -- plumbing ---------------------------------------------------------------------------------------------
    def _send(
        self, request_topic: str, reply_topic: str, records: Sequence[Mapping[str, Any]]
    ) -> list[tuple[bytes, Future[Any]]]:
        """Produce the requests; per request, its correlation id and the future its reply resolves."""
        if self._closed:
            raise InputError("this client is closed")
        self._reader(reply_topic)  # standing at the reply topic's end before the first request leaves
        ids = [os.urandom(16) for _ in records]
        futures: list[Future[Any]] = [Future() for _ in records]
        with self._lock:
            self._pending.update(zip(ids, futures, strict=True))
        values = [orjson.dumps(dict(r)) for r in records]
        headers = [[(H_CORRELATION_ID, cid), (H_REPLY_TOPIC, reply_topic.encode())] for cid in ids]
        try:
            self._producer.produce_batch(request_topic, values, None, headers=headers)
        except KafkaError:
            with self._lock:
                for cid in ids:
                    self._pending.pop(cid, None)
            raise
        return list(zip(ids, futures, strict=True))

    def _reader(self, topic: str) -> _ReplyReader:
        with self._lock:
            reader = self._readers.get(topic)
            if reader is None:
                reader = self._readers[topic] = _ReplyReader(self, topic)
        return reader

    def _resolve(self, correlation_id: bytes, value: bytes | None) -> None:
        with self._lock:
            future = self._pending.pop(correlation_id, None)
        if future is None or future.done():
            return  # another client's reply, or one whose caller gave up
        try:
            future.set_result(orjson.loads(value) if value else None)
        except orjson.JSONDecodeError:
            future.set_result(value)  # not JSON: the bytes as written

    def _timeout(self, ids: list[bytes], request_topic: str, reply_topic: str, timeout: float) -> RequestTimeout:
        """Forget the calls that gave up (a late reply is skipped) and say why."""
        with self._lock:
            for cid in ids:
                self._pending.pop(cid, None)
        return RequestTimeout(
            f"no reply on '{reply_topic}' within {timeout:g} s to a request on '{request_topic}'",
            hint=f"is a persistent query reading '{request_topic}' running? (SHOW QUERIES)",
        )

    def close(self) -> None:
        """Stop reading replies; calls still waiting time out."""
        self._closed = True
        for reader in list(self._readers.values()):
            reader.stop()
        self._producer.flush(10)

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class _ReplyReader:
    """One consumer of a reply topic for all of a client's calls, in a thread of its own."""

    def __init__(self, client: Client, topic: str) -> None:
        self.client, self.topic = client, topic
        self._consumer = BatchConsumer(client.config, [topic], start="latest")
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"replies-{topic}", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            while not self._stop.is_set():
                batch = self._consumer.poll_batch(10_000, self.client.poll_s)
                if not len(batch):
                    continue
                for headers, value in zip(batch.headers, batch.values, strict=True):
                    correlation = next((v for k, v in headers or () if k == H_CORRELATION_ID), None)
                    if correlation is not None:
                        self.client._resolve(correlation, value)
        except StreamMLError as exc:
            log.error("reading replies on %s: %s", self.topic, exc)
        finally:
            self._consumer.close()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(10)
