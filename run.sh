#!/usr/bin/env bash
# HMIL Studio set-up and entry points. Everything installs into ./.venv (nothing global).
#   ./run.sh demo   install, build the SYNTHETIC demo cohort + model, open the viewer
#   ./run.sh test   install with dev extras, lint + type-check, the whole test suite with coverage
#                   (./run.sh test ARGS... passes ARGS to pytest and applies no coverage floor)
#   ./run.sh lint   the pre-commit hooks on every tracked file (ruff, ruff format, mypy, whitespace)
#                   and TypeScript's check of the viewer's front end (needs node and npm)
#   ./run.sh docs   build the documentation site into site/ (mkdocs --strict, offline)
#   ./run.sh dist   build sdist + wheel into dist/ and try the wheel in a fresh virtual environment
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

dev_setup() {
  setup
  "$VENV/bin/python" -m pip install --quiet -r requirements-dev.txt
}

lint() {
  # the same hooks, config and tool versions as a contributor's `git commit` (see docs/contributing.md)
  "$VENV/bin/pre-commit" run --all-files --show-diff-on-failure
  # the viewer's front end against its JSDoc types (TypeScript as pinned in package-lock.json)
  npm ci --no-audit --no-fund --silent
  npm run --silent typecheck
}

dist() {
  rm -rf dist
  "$VENV/bin/python" -m build --no-isolation --outdir dist . >/dev/null
  local fresh
  fresh=$(mktemp -d)
  "$VENV/bin/python" -m venv --without-pip "$fresh/venv"
  "$VENV/bin/python" -m pip --python "$fresh/venv/bin/python" install --quiet --no-deps \
    --no-index dist/*.whl
  # the runtime dependencies come from .venv (a path entry, not a site dir: its editable
  # hmil is not picked up); tests/packaging checks the same with pip check
  local purelib='import sysconfig; print(sysconfig.get_path("purelib"))'
  "$VENV/bin/python" -c "$purelib" >"$("$fresh/venv/bin/python" -c "$purelib")/_hmil_deps.pth"
  (cd "$fresh" && venv/bin/hmil --help >/dev/null && venv/bin/hmil demo --help >/dev/null \
    && venv/bin/hmil --version)
  rm -rf "$fresh"
  ls -l dist
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
    dev_setup
    browser_deps
    lint
    if [ $# -gt 1 ]; then
      "$VENV/bin/python" -m pytest -q --cov --cov-fail-under=0 "${@:2}"
    else  # the whole suite: the coverage floor of pyproject.toml applies
      "$VENV/bin/python" -m pytest -q --cov
    fi
    "$VENV/bin/python" .ci/coverage_packages.py
    ;;
  lint)
    dev_setup
    lint
    ;;
  docs)
    dev_setup
    # (the theme's banner about its end of life in 2027 would bury the build's own messages)
    NO_MKDOCS_2_WARNING=1 "$VENV/bin/mkdocs" build --strict
    ;;
  dist)
    dev_setup
    dist
    ;;
  *)
    echo "usage: ./run.sh [demo|test|lint|docs|dist|setup]" >&2
    exit 2
    ;;
esac
