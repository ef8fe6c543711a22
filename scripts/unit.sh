#!/usr/bin/env bash
# The library's unit, reference and property tests alone (make unit): every tests/test_*.py
# except the book build and the browser tests, without the notebooks, and without the tests
# marked slow (real models, training, end-to-end scripts; make test runs them). Extra
# arguments go to pytest. The linter runs first (tests/test_lint.py runs it too).
set -eo pipefail
cd "$(dirname "$0")/.."
PY=.venv/bin/python
[ -x "$PY" ] || { echo "error: .venv missing: run 'make venv' (or 'make unit')" >&2; exit 1; }
export PATH="$PWD/.venv/bin:$PATH"
units=()
for f in tests/test_*.py; do
  case "$f" in
    tests/test_book.py|tests/test_*browser*.py) ;;
    *) units+=("$f") ;;
  esac
done
echo "==> ruff check and ruff format --check (the settings of pyproject.toml's [tool.ruff])"
.venv/bin/ruff check src tests scripts benchmarks
.venv/bin/ruff format --check src tests scripts benchmarks
exec "$PY" -m pytest "${units[@]}" -m "not slow" -q --durations=10 "$@"
