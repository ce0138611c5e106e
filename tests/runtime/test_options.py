"""Runtime options: the error policy of each stage, as ``streamml run --on-error`` sets it."""

from __future__ import annotations

import subprocess
import sys

import pytest

from streamml.errors import InputError
from streamml.runtime.options import ErrorPolicy, RuntimeOptions


def test_each_stage_has_its_own_policy() -> None:
    options = RuntimeOptions(**RuntimeOptions.policies(["predict=fail", "Produce = skip"]))
    assert options.policy("predict") is ErrorPolicy.FAIL
    assert options.policy("produce") is ErrorPolicy.SKIP
    assert options.policy("decode") is ErrorPolicy.DEAD_LETTER
    assert options.policy("evaluate") is ErrorPolicy.DEAD_LETTER


@pytest.mark.parametrize("spec", ["predict", "predict=explode", "train=fail"])
def test_an_unreadable_policy_is_refused_with_the_choices(spec: str) -> None:
    with pytest.raises(InputError, match="dead-letter, skip, fail"):
        RuntimeOptions.policies([spec])


def test_run_refuses_an_unreadable_policy_in_one_line() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "streamml.cli.app", "run", "--on-error", "predict=explode"],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert proc.returncode != 0
    assert "cannot read error policy 'predict=explode'" in proc.stderr
    assert "Traceback" not in proc.stderr
