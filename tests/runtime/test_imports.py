"""A worker's imports stay lean: the runtime path must not pull in training or plotting libraries.

Each check imports the path in a fresh interpreter (``streamml.bench.memory.import_probe``) and reads its
``sys.modules``: what this test process imported itself does not count.
"""

from __future__ import annotations

import pytest

from streamml.bench.memory import CLI_MODULES, WORKER_MODULES, import_probe

NEVER = ("matplotlib", "pandas", "sklearn", "torch")


@pytest.mark.parametrize(
    "modules",
    [WORKER_MODULES, ("streamml.runtime.runner",), CLI_MODULES],
    ids=["benchmark worker", "runner", "streamml run"],
)
def test_runtime_path_imports_no_training_or_plotting_library(modules: tuple[str, ...]) -> None:
    probe = import_probe(modules)
    assert "streamml.runtime.runner" in probe.modules or "streamml.cli.app" in probe.modules
    assert probe.loaded(NEVER) == []


def test_probe_sees_a_library_the_imports_load() -> None:
    probe = import_probe(("streamml.runtime.runner", "json"))
    assert probe.loaded(("json", "onnxruntime")) == ["json", "onnxruntime"]
    assert probe.peak_rss_mib >= probe.rss_mib > 0
    # the resident set splits into shared-library pages and the process's own memory
    assert probe.file_mib > 0 and probe.anon_mib > 0
    assert abs(probe.file_mib + probe.anon_mib - probe.rss_mib) < 0.1 * probe.rss_mib


def test_runtime_path_leaves_the_schema_registry_http_client_unloaded() -> None:
    """httpx serves only the Avro schema registry; a worker loads it with the first registry client."""
    assert import_probe(WORKER_MODULES).loaded(("httpx",)) == []
