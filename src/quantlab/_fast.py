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

from typing import Iterator

import torch

__all__ = ["CHUNK_ELEMENTS", "CAST_CHUNK_ELEMENTS", "row_chunks"]

#: Elements per chunk: 128Ki float32 values = 512 KiB, half of a 1 MiB L2 cache (the
#: best of 16Ki..256Ki measured with benchmarks/run.py's kernels on the project's machine).
CHUNK_ELEMENTS = 1 << 17

#: Elements per chunk for a cast there and back (two cheap ops per chunk: larger chunks
#: spend less time in Python).
CAST_CHUNK_ELEMENTS = 1 << 19


def row_chunks(t: torch.Tensor, elements: int = CHUNK_ELEMENTS) -> Iterator[slice]:
    """Slices along dim 0 of ``t`` holding about ``elements`` elements each (at least one row).

    Args:
        t: a tensor with at least one dimension.
        elements: target number of elements per chunk.

    Returns:
        An iterator of ``slice`` objects that together cover ``range(t.shape[0])`` in order.
    """
    rows = t.shape[0]
    per_row = max(1, t.numel() // rows) if rows else 1
    step = max(1, elements // per_row)
    for start in range(0, rows, step):
        yield slice(start, min(rows, start + step))
