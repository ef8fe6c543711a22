"""Execute the chapter's notebooks in parallel into the book's execution cache.

``make book`` (scripts/build_book.sh) runs this before ``jupyter-book build``: every notebook
whose code is not already in the cache (``_build/.jupyter_cache``, jupyter-cache's database,
the one Jupyter Book reads in ``execute_notebooks: cache`` mode) is executed in a fresh kernel,
natively, in its own folder (``chapters/``), and stored there. Jupyter Book then finds every
notebook cached and only renders. Executing them here instead of inside the build lets two
notebooks run at once on two cores (``--jobs``).

A notebook whose metadata has ``"quantlab": {"run_alone": true}`` (the speed page, whose own
timings are part of its content) runs after the others, with no other notebook beside it.

    .venv/bin/python scripts/execute_notebooks.py [--jobs 2] [notebooks ...]

Exit status 1 if a notebook fails (its traceback is printed), as a failing notebook fails the
build.
"""

from __future__ import annotations

import argparse
import concurrent.futures as cf
import sys
import time
from pathlib import Path

import nbformat

ROOT = Path(__file__).resolve().parents[1]
CACHE = ROOT / "_build" / ".jupyter_cache"


def _execute(path: str, timeout: int) -> tuple[str, object, float, str | None]:
    """Run one notebook in a fresh kernel (in a worker process); return it executed."""
    from jupyter_cache.executors.utils import single_nb_execution

    nb = nbformat.read(path, as_version=4)
    result = single_nb_execution(
        nb, cwd=str(Path(path).parent), timeout=timeout, allow_errors=False, meta_override=True
    )
    return path, result.nb, result.time, result.exc_string if result.err is not None else None


def run_alone(nb: nbformat.NotebookNode) -> bool:
    return bool(nb.metadata.get("quantlab", {}).get("run_alone", False))


def main(argv: list[str] | None = None) -> int:
    from jupyter_cache import get_cache
    from jupyter_cache.base import CacheBundleIn

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("notebooks", nargs="*", help="notebooks (default: chapters/*.ipynb)")
    ap.add_argument("--jobs", type=int, default=2, help="notebooks executed at once (default 2)")
    ap.add_argument("--timeout", type=int, default=600, help="seconds per cell (default 600)")
    ap.add_argument("--cache", default=str(CACHE), help="jupyter-cache folder (default _build/.jupyter_cache)")
    args = ap.parse_args(argv)
    if args.jobs < 1:
        ap.error(f"--jobs must be at least 1, got {args.jobs}")
    paths = [Path(p).resolve() for p in args.notebooks] or sorted((ROOT / "chapters").glob("*.ipynb"))
    cache = get_cache(args.cache)

    todo, alone = [], []
    for p in paths:
        nb = nbformat.read(str(p), as_version=4)
        try:
            cache.match_cache_notebook(nb)
            print(f"    cached:   {p.name}", flush=True)
            continue
        except KeyError:
            pass
        (alone if run_alone(nb) else todo).append(str(p))
    if not todo and not alone:
        print("==> every notebook is in the execution cache")
        return 0
    print(
        f"==> executing {len(todo) + len(alone)} notebooks, {args.jobs} at a time"
        + (f" ({', '.join(Path(a).name for a in alone)} alone, last)" if alone else ""),
        flush=True,
    )

    failed = []
    start = time.perf_counter()

    def store(path: str, nb: object, seconds: float, error: str | None) -> None:
        name = Path(path).name
        if error is not None:
            failed.append(name)
            print(f"    FAILED:   {name} after {seconds:.0f} s\n{error}", flush=True)
            return
        record = cache.add_nb_to_project(path)
        cache.cache_notebook_bundle(
            CacheBundleIn(nb, record.uri, data={"execution_seconds": seconds}), check_validity=False, overwrite=True
        )
        print(f"    executed: {name} in {seconds:.0f} s", flush=True)

    if todo:
        with cf.ProcessPoolExecutor(max_workers=min(args.jobs, len(todo))) as pool:
            futures = [pool.submit(_execute, p, args.timeout) for p in todo]
            for fut in cf.as_completed(futures):
                store(*fut.result())
    for p in alone:
        store(*_execute(p, args.timeout))
    print(
        f"==> notebooks executed in {time.perf_counter() - start:.0f} s"
        + (f"; FAILED: {', '.join(failed)}" if failed else ""),
        flush=True,
    )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
