"""librdkafka's log lines, aggregated: while a broker is down every client repeats the same line many times
a second, which buries everything else. Each distinct line (numbers aside) is logged once; its repeats are
counted and reported in one line when it recurs after the quiet period, or when ``flush`` is called.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from dataclasses import dataclass

_NUMBERS = re.compile(r"\d+")


@dataclass
class _Seen:
    first: float
    repeats: int = 0


class AggregatingLog:
    """A ``logger`` for librdkafka clients (it calls ``log(level, format, *args)``) that folds repeats."""

    def __init__(self, logger: logging.Logger, quiet_s: float = 60.0, max_lines: int = 1024) -> None:
        self.logger = logger
        self.quiet_s = quiet_s
        self.max_lines = max_lines
        self._seen: dict[str, _Seen] = {}
        self._lock = threading.Lock()

    def log(self, level: int, msg: str, *args: object) -> None:
        if not self.logger.isEnabledFor(level):
            return
        text = msg % args if args else msg
        key = _NUMBERS.sub("#", text)
        now = time.monotonic()
        with self._lock:
            seen = self._seen.get(key)
            if seen is not None and now - seen.first < self.quiet_s:
                seen.repeats += 1
                return
            repeats = seen.repeats if seen is not None else 0
            if len(self._seen) >= self.max_lines:
                self._seen.clear()
            self._seen[key] = _Seen(now)
        if repeats:
            text += f" (and {repeats} times more in the last {self.quiet_s:.0f} s)"
        self.logger.log(level, "%s", text)

    def flush(self) -> None:
        """Report the repeats counted since each line was last logged."""
        with self._lock:
            pending = {k: s.repeats for k, s in self._seen.items() if s.repeats}
            self._seen.clear()
        for key, repeats in pending.items():
            self.logger.info("%s (repeated %d times)", key, repeats)
