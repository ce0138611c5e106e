"""Adaptive batching: concurrent requests for one model merged into one ONNX Runtime call, results split back.

Requests wait in a queue per model version and input layout (names, dtypes and trailing dimensions must agree
to be stacked). A queue is scored when it holds ``max_batch_size`` rows or its first request has waited
``max_wait_ms``, whichever comes first; a request of ``max_batch_size`` rows or more runs alone. Scoring runs
on worker threads, never on the event loop. When a merged batch fails, each of its requests is scored alone,
so a bad request fails with its own error and the others still get their answers.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np

from streamml.inference.service import InferenceService, Served

Feed = dict[str, np.ndarray]


@dataclass(frozen=True)
class BatchPolicy:
    """How long and how large a model's batches may grow; ``max_batch_size`` 1 turns batching off."""

    max_batch_size: int = 64
    max_wait_ms: float = 2.0

    def __post_init__(self) -> None:
        if self.max_batch_size < 1 or self.max_wait_ms < 0:
            raise ValueError("max_batch_size must be >= 1 and max_wait_ms >= 0")


@dataclass
class _Waiting:
    feed: Feed
    rows: int
    future: asyncio.Future[tuple[Feed, float]]
    enqueued: float = field(default_factory=time.perf_counter)


@dataclass
class _Queue:
    served: Served
    items: list[_Waiting] = field(default_factory=list)
    rows: int = 0
    timer: asyncio.TimerHandle | None = None


class AdaptiveBatcher:
    """Merges concurrent :meth:`infer` calls per model; one per event loop (see the module docstring)."""

    def __init__(
        self,
        service: InferenceService,
        *,
        default: BatchPolicy | None = None,
        policies: Mapping[str, BatchPolicy] | None = None,
        workers: int = 1,
    ) -> None:
        self.service = service
        self.default = default or BatchPolicy()
        self.policies = dict(policies or {})
        self._executor = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="streamml-infer")
        self._queues: dict[tuple[object, ...], _Queue] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    def policy(self, model: str) -> BatchPolicy:
        return self.policies.get(model, self.default)

    async def infer(self, served: Served, feed: Feed) -> tuple[Feed, float]:
        """The raw outputs for ``feed`` and how long it waited for its batch, in seconds."""
        loop = asyncio.get_running_loop()
        rows = len(next(iter(feed.values()))) if feed else 0
        policy = self.policy(served.version.name)
        future: asyncio.Future[tuple[Feed, float]] = loop.create_future()
        metrics = self.service.metrics
        metrics.pending(served.version, 1)
        future.add_done_callback(lambda _: metrics.pending(served.version, -1))
        waiting = _Waiting(feed, rows, future)
        if rows >= policy.max_batch_size or policy.max_wait_ms == 0:
            self._start(served, [waiting])
            return await future
        key = (served.label, *sorted((name, a.dtype.str, a.shape[1:]) for name, a in feed.items()))
        queue = self._queues.get(key)
        if queue is None or queue.rows + rows > policy.max_batch_size:
            if queue is not None:
                self._flush(key)
            queue = self._queues[key] = _Queue(served)
            queue.timer = loop.call_later(policy.max_wait_ms / 1000, self._flush, key)
        queue.items.append(waiting)
        queue.rows += rows
        if queue.rows >= policy.max_batch_size:
            self._flush(key)
        return await future

    def _flush(self, key: tuple[object, ...]) -> None:
        queue = self._queues.pop(key, None)
        if queue is None:
            return
        if queue.timer is not None:
            queue.timer.cancel()
        self._start(queue.served, queue.items)

    def _start(self, served: Served, items: list[_Waiting]) -> None:
        task = asyncio.get_running_loop().create_task(self._run(served, items))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _run(self, served: Served, items: list[_Waiting]) -> None:
        loop = asyncio.get_running_loop()
        started = time.perf_counter()
        feed = (
            items[0].feed if len(items) == 1 else {n: np.concatenate([i.feed[n] for i in items]) for n in items[0].feed}
        )
        total = sum(item.rows for item in items)
        try:
            raw = await loop.run_in_executor(self._executor, self.service.score, served, feed)
            splittable = len(items) == 1 or all(len(v) == total for v in raw.values())
        except Exception as exc:
            if len(items) == 1:
                self._fail(served, items[0], exc)
                return
            splittable = False
        if not splittable:  # isolate: each request alone, so only the bad ones fail
            for item in items:
                try:
                    own = await loop.run_in_executor(self._executor, self.service.score, served, item.feed)
                except Exception as exc:
                    self._fail(served, item, exc)
                else:
                    self._answer(served, item, own, started)
            return
        offsets = np.cumsum([0] + [item.rows for item in items])
        for item, start, end in zip(items, offsets[:-1], offsets[1:], strict=True):
            own = raw if len(items) == 1 else {name: value[start:end] for name, value in raw.items()}
            self._answer(served, item, own, started)

    def _answer(self, served: Served, item: _Waiting, raw: Feed, started: float) -> None:
        queued = started - item.enqueued
        self.service.metrics.request(served.version, time.perf_counter() - item.enqueued, queued)
        _settle(item, result=(raw, queued))

    def _fail(self, served: Served, item: _Waiting, exc: BaseException) -> None:
        self.service.metrics.failed(served.version, 1, "model")
        _settle(item, exc=exc)

    async def drain(self, timeout_s: float = 10.0) -> None:
        """Score whatever is queued and wait (at most ``timeout_s``) for the batches in flight."""
        for key in list(self._queues):
            self._flush(key)
        if self._tasks:
            await asyncio.wait(set(self._tasks), timeout=timeout_s)

    def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)


def _settle(item: _Waiting, *, result: tuple[Feed, float] | None = None, exc: BaseException | None = None) -> None:
    if item.future.done():  # the caller went away
        return
    if exc is not None:
        item.future.set_exception(exc)
    else:
        assert result is not None
        item.future.set_result(result)
