"""Helpers for the hot paths: work on cache-sized chunks.

Element-wise torch code on a large tensor makes one trip through main memory per
operation: ``round(x / scale) * scale`` written as four in-place ops reads and writes a
16M-element tensor four times. The same ops applied to one slice of about 512 KiB at a
time run while the slice sits in the CPU's cache, so the tensor crosses main memory
only once on the way in and once on the way out -- the cost of a plain copy -- and the
arithmetic is done at cache speed. Results are identical (every op is element-wise);
only the order in which the elements are visited changes.

``benchmarks/run.py`` measures what this buys against a memory copy.
"""

from __future__ import annotations

from typing import Iterator, Optional

import torch

__all__ = ["CHUNK_ELEMENTS", "CAST_CHUNK_ELEMENTS", "chunk_elements", "row_chunks"]

#: Elements per chunk: 128Ki float32 values = 512 KiB, half of a 1 MiB L2 cache (the
#: best of 16Ki..256Ki measured with benchmarks/run.py's kernels on the project's machine).
CHUNK_ELEMENTS = 1 << 17

#: Elements per chunk for a cast there and back (two cheap ops per chunk: larger chunks
#: spend less time in Python).
CAST_CHUNK_ELEMENTS = 1 << 19


#: Smallest chunk when torch runs several threads (see :func:`chunk_elements`).
MULTI_THREAD_CHUNK_ELEMENTS = 1 << 20


def chunk_elements(base: int = CHUNK_ELEMENTS) -> int:
    """Elements per chunk for the current number of torch threads.

    With one thread, ``base``. With several, every op on a chunk is split between the
    threads, which wait for each other when it ends; on a shared machine a busy core makes
    that wait long, so chunks grow to at least 1Mi elements (fewer ops, each worth
    splitting).
    """
    return base if torch.get_num_threads() == 1 else max(base, MULTI_THREAD_CHUNK_ELEMENTS)


def row_chunks(t: torch.Tensor, elements: Optional[int] = None) -> Iterator[slice]:
    """Slices along dim 0 of ``t`` holding about ``elements`` elements each (at least one row).

    Args:
        t: a tensor with at least one dimension.
        elements: target number of elements per chunk (default: :func:`chunk_elements`).

    Returns:
        An iterator of ``slice`` objects that together cover ``range(t.shape[0])`` in order.
    """
    if elements is None:
        elements = chunk_elements()
    rows = t.shape[0]
    per_row = max(1, t.numel() // rows) if rows else 1
    step = max(1, elements // per_row)
    for start in range(0, rows, step):
        yield slice(start, min(rows, start + step))
