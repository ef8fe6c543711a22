#!/usr/bin/env bash
# Run every test (the body of `make test`, which refreshes .venv first), in one pytest
# session so that its closing summary counts them all:
#
#   1. unit, reference and property tests of the library (tests/test_*.py);
#   2. nbval in strict mode over every chapter notebook: each is re-executed in a fresh
#      kernel and its outputs must match the stored ones (tests/nbval_sanitize.cfg masks
#      addresses, temporary paths and timings);
#   3. the strict book build: jupyter-book build . --all -W -n --keep-going, no warning
#      (tests/test_book.py, via scripts/build_book.sh). It renders the outputs stored in
#      the notebooks, which step 2 has just reproduced in fresh kernels: executing every
#      notebook a second time would double the run time and check nothing more
#      (`make book` executes them);
#   4. the browser tests: every built page in headless Chromium, offline
#      (tests/test_browser.py), and the pages' own interactive checks
#      (tests/test_*browser*.py); they reuse the book built in 3.
#
# Extra arguments are passed to pytest (e.g. `bash scripts/test.sh -x`).
set -eo pipefail
cd "$(dirname "$0")/.."
PY=.venv/bin/python
[ -x "$PY" ] || { echo "error: .venv missing: run 'make venv' (or 'make test')" >&2; exit 1; }
export PATH="$PWD/.venv/bin:$PATH"

shopt -s nullglob
# Tests that open the built book in a browser (tests/test_*browser*.py) run after the
# strict build, and reuse it.
units=()
browser=()
for f in tests/test_*.py; do
  case "$f" in
    tests/test_book.py) ;;
    tests/test_*browser*.py) browser+=("$f") ;;
    *) units+=("$f") ;;
  esac
done
notebooks=(chapters/*.ipynb)

export QUANTLAB_BOOK_EXECUTION=${QUANTLAB_BOOK_EXECUTION:-off}
echo "==> ${#units[@]} test files, ${#notebooks[@]} notebooks (nbval), the strict book build, ${#browser[@]} browser test files"
# pytest's exit status is the script's; its closing summary line is the last line printed.
exec "$PY" -m pytest \
  "${units[@]}" \
  "${notebooks[@]}" \
  tests/test_book.py "${browser[@]}" \
  --nbval --nbval-current-env --nbval-sanitize-with tests/nbval_sanitize.cfg --nbval-cell-timeout=600 \
  --durations=15 \
  "$@"
