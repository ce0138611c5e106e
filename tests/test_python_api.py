"""The Python API the README documents: ``streamml.sql``, ``streamml.query``, ``streamml.train``, and
``streamml.Client`` in its feature list.

``streamml.sql`` is also the SQL subpackage, so these run the README's example in fresh interpreters, each
with a different import history, against the test broker.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

import streamml
from streamml.config import Settings
from streamml.formats import get_format
from streamml.kafka import Producer

README = Path(__file__).resolve().parents[1] / "README.md"


def readme_python() -> str:
    """The README's one ```python block, as written."""
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)
    assert len(blocks) == 1, "the README should hold exactly one Python example"
    return str(blocks[0])


def test_all_names_exactly_the_documented_api() -> None:
    assert set(re.findall(r"\bstreamml\.(\w+)\(", readme_python())) == {"sql", "query", "train"}
    documented = set(re.findall(r"\bstreamml\.(\w+)\(", README.read_text()))  # and the feature list
    assert documented == {"sql", "query", "train", "Client"}
    assert sorted(streamml.__all__) == sorted(documented)
    assert all(callable(getattr(streamml, name)) for name in streamml.__all__)


def _produce_transactions(settings: Settings, topic: str, rows: int = 400) -> None:
    rng = np.random.default_rng(7)
    table = pa.table(
        {
            "Id": np.arange(rows, dtype=np.int64),
            "Amount": rng.gamma(2.0, 80.0, rows),
            "Class": ["1" if i % 50 == 0 else "0" for i in range(rows)],
        }
    )
    with Producer(settings.client_config(settings.bootstrap or "")) as producer:
        producer.produce_batch(topic, get_format("JSON", table.schema).encode(table))


@pytest.mark.broker
@pytest.mark.parametrize(
    "before",
    ["", "import streamml.sql.parser", "import streamml.sql as sql_layer\nassert sql_layer.SqlEngine is not None"],
    ids=["fresh", "after-import-streamml.sql.parser", "after-import-as"],
)
def test_readme_example_runs_twice(
    kafka_settings: Settings, topic: Callable[..., str], unique: Callable[[str], str], tmp_path: Path, before: str
) -> None:
    name = topic()
    _produce_transactions(kafka_settings, name)
    example = readme_python().replace("KAFKA_TOPIC='tx'", f"KAFKA_TOPIC='{name}'")
    script = "\n".join(
        [
            before,
            "import streamml",
            "for _ in range(2):",
            *(f"    {line}" for line in example.splitlines()),
            "    assert len(df) > 0, df",
            "    print('version', version.version)",
            "import streamml.sql.parser, streamml.sql as again",
            "assert again.SqlEngine is not None and callable(streamml.sql)",
        ]
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("STREAMML_")}
    env.update(
        STREAMML_BOOTSTRAP=kafka_settings.bootstrap or "",
        STREAMML_HOME=str(tmp_path / "home"),
        STREAMML_SERVICE_ID=unique("svc"),
    )
    proc = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, env=env, cwd=tmp_path, timeout=300, check=False
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.split() == ["version", "1", "version", "2"]
