"""Watermark queries answer real offsets or fail: a logical offset (-1, -1001) is never an empty partition."""

from __future__ import annotations

from typing import ClassVar

import pytest

from streamml.errors import KafkaError
from streamml.kafka import admin as admin_module
from streamml.kafka.admin import Admin


class _Answers:
    """A stand-in for the watermark consumer that gives the queued answers in turn (the last one forever)."""

    answers: ClassVar[list[tuple[int, int]]] = []

    def __init__(self, config: object) -> None:
        self.calls = 0

    def get_watermark_offsets(self, tp: object, timeout: float, cached: bool) -> tuple[int, int]:
        self.calls += 1
        return self.answers[min(self.calls, len(self.answers)) - 1]

    def close(self) -> None:
        pass


def _admin(monkeypatch: pytest.MonkeyPatch, answers: list[tuple[int, int]], timeout_s: float = 5.0) -> Admin:
    monkeypatch.setattr(_Answers, "answers", answers)
    monkeypatch.setattr(admin_module, "Consumer", _Answers)
    return Admin({"bootstrap.servers": "127.0.0.1:1"}, timeout_s=timeout_s)


def test_logical_offsets_are_asked_again_until_real(monkeypatch: pytest.MonkeyPatch) -> None:
    admin = _admin(monkeypatch, [(-1001, -1001), (-1, -1), (0, 1000)])
    assert admin.watermarks("t", [0]) == {0: (0, 1000)}


def test_logical_offsets_past_the_deadline_are_an_error(monkeypatch: pytest.MonkeyPatch) -> None:
    admin = _admin(monkeypatch, [(0, -1)], timeout_s=0.3)
    with pytest.raises(KafkaError, match=r"partition 0 answered \(0, -1\)"):
        admin.watermarks("t", [0])
