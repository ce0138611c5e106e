#!/usr/bin/env bash
# The whole check: install what is missing, lint and type-check, then run the test suite.
# Extra arguments go to pytest (e.g. scripts/test.sh -k formats).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
bash scripts/lint.sh
# Tests against other vendors' servers (marker peer) are opt-in: scripts/test.sh -m peer runs them.
exec .venv/bin/python -m pytest -m "not peer" "$@"
