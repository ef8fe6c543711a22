#!/usr/bin/env bash
# Run every test (the body of `make test`, which refreshes .venv first), in one pytest
# session so that its closing summary counts them all:
#
#   1. unit, reference and property tests of the library (tests/test_*.py);
#   2. nbval in strict mode over every chapter notebook, twice: once natively, as `make book`
#      executes them (a notebook that would fail the book fails here), and once as an
#      AVX2-only CPU would run it (ATEN_CPU_CAPABILITY=avx2, oneDNN, MKL, OpenBLAS and numpy
#      restricted alike), which checks that the stored outputs, computed on one machine, hold
#      on another instruction set (tests/nbval_modes.py; on a CPU without AVX-512 the two are
#      the same and only the native run happens). Each re-execution must reproduce the stored
#      outputs (tests/nbval_tolerance.py, tests/nbval_sanitize.cfg);
#   3. the strict book build: jupyter-book build . --all -W -n --keep-going, no warning
#      (tests/test_book.py, via scripts/build_book.sh), from the outputs stored in the
#      notebooks, which step 2 reproduces in fresh kernels (`make book` executes them);
#   4. the browser tests: every built page in headless Chromium, offline
#      (tests/test_browser.py), and the pages' own interactive checks
#      (tests/test_*browser*.py); they reuse the book built in 3.
#
# Two pytest-xdist workers share the work (QUANTLAB_TEST_WORKERS, default 2): the cells of a
# notebook in one mode stay together and in order, the book build and the browser tests stay
# together, build first, and the unit tests of one module stay together.
# QUANTLAB_TEST_MODES=native runs the notebooks natively only.
#
# Extra arguments are passed to pytest (e.g. `bash scripts/test.sh -x`).
set -eo pipefail
cd "$(dirname "$0")/.."
PY=.venv/bin/python
[ -x "$PY" ] || { echo "error: .venv missing: run 'make venv' (or 'make test')" >&2; exit 1; }
export PATH="$PWD/.venv/bin:$PATH"

shopt -s nullglob
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
modes=${QUANTLAB_TEST_MODES:-native,avx2}
workers=${QUANTLAB_TEST_WORKERS:-2}

export QUANTLAB_BOOK_EXECUTION=${QUANTLAB_BOOK_EXECUTION:-off}
echo "==> ${#units[@]} test files, ${#notebooks[@]} notebooks (nbval: $modes), the strict book build, ${#browser[@]} browser test files; $workers workers"
# pytest's exit status is the script's; its closing summary line is the last line printed.
exec "$PY" -m pytest \
  "${units[@]}" \
  "${notebooks[@]}" \
  tests/test_book.py "${browser[@]}" \
  --nbval --nbval-current-env --nbval-sanitize-with tests/nbval_sanitize.cfg --nbval-cell-timeout=600 \
  --nbval-modes "$modes" -n "$workers" --dist loadscope \
  --durations=15 \
  "$@"
