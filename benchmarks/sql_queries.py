"""Streaming SQL throughput: a stateless CSAS (filter + projection of 30 doubles, JSON -> JSON, with and
without exactly-once) and a tumbling count over 10,000 keys, each against the exactly-once passthrough, side
by side in one run (library code: ``streamml.bench``).

    .venv/bin/python -m benchmarks.sql_queries --records 100000 --rounds 3
"""

from __future__ import annotations

from benchmarks.pipeline import main

if __name__ == "__main__":
    main("sql", doc=__doc__)
