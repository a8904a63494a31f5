#!/usr/bin/env bash
# HMIL Studio set-up and entry points. Everything installs into ./.venv (nothing global).
#   ./run.sh demo   install, build the SYNTHETIC demo cohort + model, open the viewer
#   ./run.sh test   install with dev extras, lint, run the whole test suite
#   ./run.sh setup  install only
set -euo pipefail
cd "$(dirname "$0")"
VENV=.venv
PY=${PYTHON:-python3.11}
command -v "$PY" >/dev/null 2>&1 || PY=python3

setup() {
  if [ ! -x "$VENV/bin/python" ]; then
    "$PY" -m venv "$VENV"
  fi
  "$VENV/bin/python" -m pip install --quiet --upgrade pip
  # requirements.txt pins the CPU build of torch; see README "GPU" for CUDA.
  "$VENV/bin/python" -m pip install --quiet -r requirements.txt
  "$VENV/bin/python" -m pip install --quiet --no-deps -e .
}

browser_deps() {
  # Debian's chromium for the real-browser viewer test (skipped by the test when absent).
  if ! command -v chromium >/dev/null 2>&1; then
    if [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then
      (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) \
        || echo "warning: could not install chromium; the browser test will be skipped" >&2
    else
      echo "warning: chromium not installed and not root; the browser test will be skipped" >&2
    fi
  fi
}

case "${1:-demo}" in
  setup)
    setup
    ;;
  demo)
    setup
    "$VENV/bin/hmil" demo --out hmil-demo
    exec "$VENV/bin/hmil" view hmil-demo/run
    ;;
  test)
    setup
    "$VENV/bin/python" -m pip install --quiet -r requirements-dev.txt
    browser_deps
    "$VENV/bin/ruff" check .
    "$VENV/bin/ruff" format --check .
    "$VENV/bin/python" -m pytest -q "${@:2}"
    ;;
  *)
    echo "usage: ./run.sh [demo|test|setup]" >&2
    exit 2
    ;;
esac
