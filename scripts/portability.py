"""Re-run the notebook tests as another CPU, or another thread count, would.

    .venv/bin/python scripts/portability.py --isa avx2              # an AVX2-only x86-64 CPU
    .venv/bin/python scripts/portability.py --isa default           # torch's kernels without SIMD
    .venv/bin/python scripts/portability.py --threads 2             # 2 torch threads everywhere
    .venv/bin/python scripts/portability.py --isa avx2 chapters/05_rl.ipynb

Each run re-executes the notebooks under nbval and compares them with their stored outputs,
by the rules of tests/nbval_tolerance.py (exact, or within the tolerance a cell states). It is
how the stored outputs are shown to hold on machines other than the one that stored them:

* ``--isa avx2`` restricts torch's own kernels (``ATEN_CPU_CAPABILITY``), oneDNN
  (``ONEDNN_MAX_CPU_ISA``), MKL (``MKL_ENABLE_INSTRUCTIONS``), OpenBLAS (``OPENBLAS_CORETYPE``)
  and numpy's dispatched loops (``NPY_DISABLE_CPU_FEATURES``) to AVX2, as on an AVX2-only AMD or
  Intel CPU. ``--isa default`` also turns off SIMD in torch's own kernels. ``--isa native`` (the
  default) changes nothing.
* ``--threads N`` copies the notebooks to ``_build/portability/`` with every
  ``torch.set_num_threads(...)`` call replaced by ``torch.set_num_threads(N)``, and tests the
  copies against the stored outputs.

``make test`` itself runs every notebook natively and under the ``--isa avx2`` settings
(scripts/test.sh, tests/nbval_modes.py), so that on an AVX-512 machine every test run is also a
check across instruction sets. Extra arguments after ``--`` go to pytest.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

ISA_ENV = {
    "native": {},
    "avx2": {
        "ATEN_CPU_CAPABILITY": "avx2",
        "ONEDNN_MAX_CPU_ISA": "AVX2",
        "MKL_ENABLE_INSTRUCTIONS": "AVX2",
        "OPENBLAS_CORETYPE": "Haswell",
        "NPY_DISABLE_CPU_FEATURES": "X86_V4 AVX512_ICL AVX512_SPR",
    },
    "default": {
        "ATEN_CPU_CAPABILITY": "default",
        "ONEDNN_MAX_CPU_ISA": "AVX2",
        "MKL_ENABLE_INSTRUCTIONS": "AVX2",
        "OPENBLAS_CORETYPE": "Haswell",
        "NPY_DISABLE_CPU_FEATURES": "X86_V3 X86_V4 AVX512_ICL AVX512_SPR",
    },
}

SET_THREADS = re.compile(r"torch\.set_num_threads\((?:[^()]|\([^()]*\))*\)")


def with_threads(notebook: Path, threads: int, out_dir: Path) -> Path:
    """A copy of ``notebook`` in ``out_dir`` whose code sets ``threads`` torch threads."""
    nb = json.loads(notebook.read_text())
    for cell in nb["cells"]:
        if cell["cell_type"] == "code":
            src = "".join(cell["source"])
            cell["source"] = SET_THREADS.sub(f"torch.set_num_threads({threads})", src)
    out = out_dir / notebook.name
    out.write_text(json.dumps(nb, indent=1, ensure_ascii=False) + "\n")
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--isa", choices=sorted(ISA_ENV), default="native")
    parser.add_argument("--threads", type=int, default=None, help="torch threads in every notebook")
    parser.add_argument("notebooks", nargs="*", type=Path)
    args, extra = parser.parse_known_args(argv)
    if args.threads is not None and args.threads < 1:
        parser.error(f"--threads must be >= 1, got {args.threads}")
    notebooks = [p.resolve() for p in args.notebooks] or sorted((ROOT / "chapters").glob("*.ipynb"))
    if args.threads is not None:
        out_dir = ROOT / "_build" / "portability" / "chapters"
        shutil.rmtree(out_dir, ignore_errors=True)
        out_dir.mkdir(parents=True)
        notebooks = [with_threads(p, args.threads, out_dir) for p in notebooks]
    env = dict(os.environ, **ISA_ENV[args.isa])
    env["PATH"] = f"{ROOT / '.venv' / 'bin'}{os.pathsep}{env.get('PATH', '')}"
    cmd = [
        sys.executable,
        "-m",
        "pytest",
        *map(str, notebooks),
        "--nbval",
        "--nbval-current-env",
        "--nbval-sanitize-with",
        str(ROOT / "tests" / "nbval_sanitize.cfg"),
        "--nbval-cell-timeout=900",
        "-p",
        "no:cacheprovider",
        "-q",
        *[a for a in extra if a != "--"],
    ]
    print(
        f"==> isa={args.isa} threads={args.threads or 'as each notebook sets'}: "
        + " ".join(f"{k}={v}" for k, v in ISA_ENV[args.isa].items()),
        flush=True,
    )
    return subprocess.call(cmd, cwd=ROOT, env=env)


if __name__ == "__main__":
    raise SystemExit(main())
