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

# Run as an AVX2-only x86-64 CPU would: torch's kernels, oneDNN, MKL, OpenBLAS and numpy's
# dispatched loops restricted to AVX2 (scripts/portability.py --isa avx2). The stored outputs
# were computed natively (make book), so on an AVX-512 machine every test run also checks that
# they hold on another instruction set; on an AVX2 machine the settings change nothing.
# QUANTLAB_TEST_ISA=native turns this off.
if [ "${QUANTLAB_TEST_ISA:-avx2}" = avx2 ] && grep -qw avx2 /proc/cpuinfo 2>/dev/null; then
  export ATEN_CPU_CAPABILITY=avx2 ONEDNN_MAX_CPU_ISA=AVX2 MKL_ENABLE_INSTRUCTIONS=AVX2 \
    OPENBLAS_CORETYPE=Haswell NPY_DISABLE_CPU_FEATURES="X86_V4 AVX512_ICL AVX512_SPR"
  echo "==> kernels restricted to AVX2 (ATEN_CPU_CAPABILITY=avx2 ...; QUANTLAB_TEST_ISA=native to run natively)"
fi

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
