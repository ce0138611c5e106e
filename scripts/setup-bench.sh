#!/usr/bin/env bash
# The peers `streamml bench` compares against: kcat (Debian) and Quix Streams in an environment of its own,
# because quixstreams pins older confluent-kafka and pydantic than streamml uses.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
QUIX_VENV=${STREAMML_BENCH_QUIX_VENV:-$HOME/.cache/streamml/quix-venv}
if [ ! -x "$QUIX_VENV/bin/python" ] || ! "$QUIX_VENV/bin/python" -c "import quixstreams" 2>/dev/null; then
  echo "setup-bench: installing Quix Streams into $QUIX_VENV"
  python3 -m venv "$QUIX_VENV"
  "$QUIX_VENV/bin/pip" install -q --upgrade pip
  "$QUIX_VENV/bin/pip" install -q quixstreams onnxruntime numpy orjson
fi
