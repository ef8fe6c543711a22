#!/usr/bin/env bash
# Create or refresh .venv from the pinned lists. Idempotent: a stamp holding the
# hash of the lists skips the install when nothing changed.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  echo "==> creating .venv"
  "$PY" -m venv .venv
fi
stamp=.venv/.quantlab-stamp
want=$(cat requirements.txt requirements-nodeps.txt pyproject.toml | sha256sum | cut -d' ' -f1)
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
  echo "==> .venv is up to date"
  exit 0
fi
echo "==> installing pinned packages into .venv (first time: a few minutes)"
# torch first, so that nothing that depends on it pulls a CUDA build.
.venv/bin/python -m pip install --quiet "$(grep -E '^torch==' requirements.txt)"
.venv/bin/python -m pip install --quiet -r requirements.txt
.venv/bin/python -m pip install --quiet --no-deps -r requirements-nodeps.txt
.venv/bin/python -m pip install --quiet --no-deps -e .
echo "$want" > "$stamp"
echo "==> .venv ready"
