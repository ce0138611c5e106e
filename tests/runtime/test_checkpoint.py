"""The commit order of a persistent query, checked without a broker against recording fakes."""

from __future__ import annotations

from typing import Any

import pytest

from streamml.runtime.checkpoint import Checkpoint


class Recorder:
    """One journal shared by the fakes, so the order across producer, consumer and state shows."""

    def __init__(self) -> None:
        self.calls: list[tuple[Any, ...]] = []


class FakeProducer:
    def __init__(self, journal: Recorder, fail_on: str | None = None) -> None:
        self.journal, self.fail_on = journal, fail_on
        self.in_transaction = False

    def _record(self, *call: Any) -> None:
        self.journal.calls.append(call)
        if call[0] == self.fail_on:
            raise RuntimeError(f"{call[0]} failed")

    def begin(self) -> None:
        self._record("begin")
        self.in_transaction = True

    def produce_batch(self, topic: str, values: Any, keys: Any = None, **kw: Any) -> int:
        self._record("produce", topic, len(values))
        return len(values)

    def send_offsets(self, consumer: Any, offsets: Any = None) -> None:
        self._record("send_offsets", dict(offsets))

    def commit(self, timeout_s: float | None = None) -> None:
        self._record("commit")
        self.in_transaction = False

    def abort(self, timeout_s: float | None = None) -> None:
        self._record("abort")
        self.in_transaction = False

    def flush(self, timeout_s: float = 30.0) -> None:
        self._record("flush")


class FakeConsumer:
    def __init__(self, journal: Recorder, committed: dict[tuple[str, int], int]) -> None:
        self.journal, self.committed = journal, committed

    def commit(self, offsets: Any = None) -> None:
        self.journal.calls.append(("commit_offsets", dict(offsets)))

    def committed_offsets(self) -> dict[tuple[str, int], int]:
        return dict(self.committed)

    def rewind(self, offsets: Any) -> None:
        self.journal.calls.append(("rewind", dict(offsets)))


class FakeState:
    def __init__(self, journal: Recorder) -> None:
        self.journal = journal

    def write(self, output: Any, partitions: set[int]) -> None:
        output.produce_batch("changelog", [b"s"] * len(partitions))
        self.journal.calls.append(("state", sorted(partitions)))

    def reload(self, partitions: set[int]) -> None:
        self.journal.calls.append(("reload", sorted(partitions)))


def make(exactly_once: bool = True, fail_on: str | None = None) -> tuple[Checkpoint, Recorder]:
    journal = Recorder()
    consumer = FakeConsumer(journal, {("in", 0): 5, ("in", 1): -1001})
    checkpoint = Checkpoint(FakeProducer(journal, fail_on), consumer, FakeState(journal), exactly_once=exactly_once)
    return checkpoint, journal


def test_exactly_once_commits_outputs_then_state_then_offsets_then_the_transaction() -> None:
    checkpoint, journal = make()
    checkpoint.produce("out", [b"a", b"b"], None)
    checkpoint.produce("dlq", [b"bad"], None)
    checkpoint.processed({("in", 0): 10, ("in", 1): 3}, partitions=[0, 1])
    checkpoint.commit()
    assert journal.calls == [
        ("begin",),
        ("produce", "out", 2),
        ("produce", "dlq", 1),
        ("produce", "changelog", 2),
        ("state", [0, 1]),
        ("send_offsets", {("in", 0): 10, ("in", 1): 3}),
        ("commit",),
    ]
    assert not checkpoint.pending and not checkpoint.touched and checkpoint.commits == 1


def test_a_transaction_spans_batches_until_it_commits() -> None:
    checkpoint, journal = make()
    checkpoint.produce("out", [b"a"], None)
    checkpoint.processed({("in", 0): 6})
    checkpoint.produce("out", [b"b"], None)
    checkpoint.processed({("in", 0): 7})
    checkpoint.commit()
    assert [c[0] for c in journal.calls].count("begin") == 1
    assert ("send_offsets", {("in", 0): 7}) in journal.calls


def test_nothing_processed_commits_nothing() -> None:
    checkpoint, journal = make()
    checkpoint.commit()
    assert journal.calls == []


def test_at_least_once_flushes_outputs_before_committing_offsets() -> None:
    checkpoint, journal = make(exactly_once=False)
    checkpoint.produce("out", [b"a"], None)
    checkpoint.processed({("in", 0): 6}, partitions=[0])
    checkpoint.commit()
    assert journal.calls == [
        ("produce", "out", 1),
        ("produce", "changelog", 1),
        ("state", [0]),
        ("flush",),
        ("commit_offsets", {("in", 0): 6}),
    ]


@pytest.mark.parametrize("step", ["send_offsets", "commit"])
def test_a_failed_step_aborts_and_rewinds_offsets_and_state(step: str) -> None:
    checkpoint, journal = make(fail_on=step)
    checkpoint.produce("out", [b"a"], None)
    checkpoint.processed({("in", 0): 10}, partitions=[0])
    with pytest.raises(RuntimeError, match=step):
        checkpoint.commit()
    assert journal.calls[-3:] == [("abort",), ("rewind", {("in", 0): 5, ("in", 1): -1001}), ("reload", [0, 1])]
    assert not checkpoint.pending and not checkpoint.touched and checkpoint.rewinds == 1
    # the next batch opens a fresh transaction
    checkpoint.processed({("in", 0): 6})
    assert journal.calls[-1] == ("begin",)
