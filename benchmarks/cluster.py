"""The cluster a benchmark runs against: the configured one, or a local broker started for it."""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from streamml.config import Settings, load_settings
from streamml.kafka import LocalBroker


@contextmanager
def bench_settings() -> Iterator[Settings]:
    """Settings with a bootstrap (``STREAMML_BOOTSTRAP``, else a broker of its own, stopped afterwards) and a
    temporary home."""
    with tempfile.TemporaryDirectory(prefix="streamml-bench-") as tmp:
        base = load_settings()
        broker = None
        if not base.bootstrap:
            broker = LocalBroker(Settings(home=Path(tmp) / "broker", broker_port=0, controller_port=0))
            base = Settings(bootstrap=broker.start().bootstrap)
        try:
            yield Settings(bootstrap=base.bootstrap, home=Path(tmp) / "home")
        finally:
            if broker is not None:
                broker.stop()
