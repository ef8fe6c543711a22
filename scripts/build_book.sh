#!/usr/bin/env bash
# Build the book into _build/html, executing every notebook (the body of `make book`).
#
#   1. vendor the JavaScript the pages load (scripts/vendor_js.sh: npm ci, pinned),
#      so the built book works offline;
#   2. drop cached notebook outputs when the library or the pinned environment
#      changed (jupyter-cache keys a notebook on its own cells only, so an edit of
#      src/quantlab would otherwise not re-execute an unchanged notebook), then execute
#      every notebook not in the cache, two at a time (scripts/execute_notebooks.py;
#      QUANTLAB_BOOK_JOBS sets how many), natively, into the cache the build reads;
#   3. jupyter-book build . --all -W -n --keep-going: every page is re-rendered and
#      any warning (a notebook that fails to execute, a broken reference, a page that
#      would load a script from another host) fails the build.
#
# QUANTLAB_BOOK_EXECUTION=off builds from the outputs stored in the notebooks instead
# (make test does, after nbval checked them; see _ext/execution_mode.py).
# Extra arguments are passed to `jupyter-book build`.
set -eo pipefail
cd "$(dirname "$0")/.."

if [ -x .venv/bin/jupyter-book ]; then
  export PATH="$PWD/.venv/bin:$PATH"
fi
command -v jupyter-book >/dev/null || { echo "error: jupyter-book not found: run 'make venv' first" >&2; exit 1; }

bash scripts/vendor_js.sh

mkdir -p _build
execution=${QUANTLAB_BOOK_EXECUTION:-cache}   # read by _ext/execution_mode.py
if [ "$execution" = off ]; then
  echo "==> building the book from the outputs stored in the notebooks (QUANTLAB_BOOK_EXECUTION=off)"
else
  stamp=_build/.quantlab-execution-stamp
  want=$( (find src -type f ! -path '*/__pycache__/*' ! -path '*.egg-info/*' -print0 | sort -z | xargs -0 cat
          cat requirements.txt requirements-nodeps.txt) | sha256sum | cut -d' ' -f1)
  if [ -d _build/.jupyter_cache ] && [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
    echo "==> the library or the environment changed: re-executing every notebook"
    rm -rf _build/.jupyter_cache
  fi
  echo "$want" > "$stamp"
  if [ "$execution" = cache ]; then
    # Execute the notebooks that are not cached yet, two at a time, into the cache the build
    # reads (scripts/execute_notebooks.py); a notebook that fails fails the build here.
    if ! python scripts/execute_notebooks.py --jobs "${QUANTLAB_BOOK_JOBS:-2}"; then
      echo "==> the book build FAILED: a notebook did not execute (traceback above)" >&2
      exit 1
    fi
  fi
  echo "==> building the book (execution: $execution; notebooks not in the cache are executed now)"
fi
start=$(date +%s)
set +e
jupyter-book build . --all -W -n --keep-going "$@" 2>&1 | tee _build/build.log
status=${PIPESTATUS[0]}
set -e
end=$(date +%s)
# Tests reuse this build while no source is newer than this stamp (tests/book_browser.py).
echo "$status" > _build/.book-stamp

if [ "$status" -ne 0 ]; then
  echo
  echo "==> the book build FAILED (exit $status) after $((end - start)) s; warnings above, log in _build/build.log" >&2
  exit "$status"
fi
echo
echo "==> book built in $((end - start)) s. Open it:"
echo "      file://$PWD/_build/html/index.html"
echo "    or serve it on this machine:"
echo "      python3 -m http.server --directory _build/html 8000   # then http://127.0.0.1:8000/"
