#!/usr/bin/env bash
# The peer server `benchmarks/serve_vs_mlserver.py` and `pytest -m peer` compare against: MLServer with its
# scikit-learn runtime in an environment of its own (.venv-mlserver), because it pins Python < 3.13 and
# FastAPI < 0.116; plus the load tools both servers are measured with: hey (REST) and ghz (gRPC).
# Safe to re-run: each step is skipped when already done.
set -euo pipefail
cd "$(dirname "$0")/.."
[ -x .venv/bin/python ] || bash scripts/setup.sh  # the benchmark's streamml side

PYTHON=${PYTHON:-python3.11}
command -v "$PYTHON" >/dev/null || PYTHON=python3
VENV=${STREAMML_MLSERVER_VENV:-.venv-mlserver}
MLSERVER_VERSION=1.7.1
GHZ_VERSION=v0.120.0
# The model is pickled by streamml's environment and unpickled by MLServer's: same scikit-learn on both sides.
SKLEARN_VERSION=$(.venv/bin/python -c "import sklearn; print(sklearn.__version__)" 2>/dev/null || echo 1.9.1)

need_apt=()
command -v hey >/dev/null || need_apt+=(hey)
command -v go >/dev/null || [ -x /usr/local/go/bin/go ] || need_apt+=(golang-go)
if [ ${#need_apt[@]} -gt 0 ]; then
  echo "setup-mlserver: installing Debian packages: ${need_apt[*]}"
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${need_apt[@]}" >/dev/null
fi

if [ ! -x "$VENV/bin/python" ]; then
  echo "setup-mlserver: creating $VENV with $PYTHON"
  "$PYTHON" -m venv "$VENV"
  "$VENV/bin/pip" install -q --upgrade pip
fi
# uvloop 0.22 broke MLServer 1.7.1's inference workers ("no current event loop"); pandas 3 is newer than it.
# py-spy profiles either server under load (py-spy record --pid PID).
pins="mlserver==$MLSERVER_VERSION mlserver-sklearn==$MLSERVER_VERSION scikit-learn==$SKLEARN_VERSION uvloop==0.21.0 pandas<3 py-spy==0.4.3"
stamp="$VENV/.mlserver-installed"
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$pins" ]; then
  echo "setup-mlserver: installing $pins into $VENV"
  # shellcheck disable=SC2086
  "$VENV/bin/pip" install -q $pins
  echo "$pins" >"$stamp"
fi

# ghz built with `go install` reports its version as "dev": a stamp names the version built.
ghz_stamp="$VENV/.ghz-$GHZ_VERSION"
if [ ! -x "$VENV/bin/ghz" ] || [ ! -f "$ghz_stamp" ]; then
  echo "setup-mlserver: building ghz $GHZ_VERSION into $VENV/bin"
  GO=$(command -v go || echo /usr/local/go/bin/go)
  GOBIN="$(cd "$VENV" && pwd)/bin" "$GO" install "github.com/bojand/ghz/cmd/ghz@$GHZ_VERSION"
  touch "$ghz_stamp"
fi
