"""tests/nbval_sanitize.cfg masks what varies between runs and machines, and nothing else.

nbval applies each section's regex, in file order, to the stored and the fresh outputs
before comparing them (``--nbval-sanitize-with``); this test applies them the same way.
"""

from __future__ import annotations

import configparser
import re
from pathlib import Path

import pytest

CFG = Path(__file__).resolve().parent / "nbval_sanitize.cfg"


def sanitize(text: str) -> str:
    parser = configparser.ConfigParser()
    parser.read(CFG)
    for section in parser.sections():
        text = re.sub(parser[section]["regex"], parser[section]["replace"], text)
    return text


@pytest.mark.parametrize(
    ("first", "second"),
    [
        ("<Linear at 0x7f3a2b4c5d60>", "<Linear at 0x55d1c0ffee00>"),
        ("/tmp/ipykernel_4121/3301.py:7: UserWarning: x", "/tmp/ipykernel_88/12.py:7: UserWarning: x"),
        (
            "/work/main/.venv/lib/python3.11/site-packages/torch/nn/modules/module.py:1: FutureWarning: y",
            "/tmp/fresh/.venv/lib/python3.11/site-packages/torch/nn/modules/module.py:1: FutureWarning: y",
        ),
        (
            "/work/main/src/quantlab/gptq.py:120: RuntimeWarning: z",
            "/tmp/fresh/src/quantlab/gptq.py:120: RuntimeWarning: z",
        ),
        ("saved to /tmp/tmpab12cd/weights.npy", "saved to /tmp/tmpzz99/weights.npy"),
        (
            "layers: 100%|██████████| 36/36 [00:01<00:00, 25.13it/s]",
            "layers: 100%|██████████| 36/36 [00:04<00:00,  8.70it/s]",
        ),
        (
            "1.23 ms ± 45.6 µs per loop (mean ± std. dev. of 7 runs, 1,000 loops each)",
            "3.9 ms ± 1.2 ms per loop (mean ± std. dev. of 7 runs, 100 loops each)",
        ),
        ("Wall time: 1.21 s", "Wall time: 870 ms"),
        ("forward pass took 0.53 ms", "forward pass took 2.1 ms"),
    ],
)
def test_run_dependent_text_is_masked(first: str, second: str) -> None:
    assert first != second
    assert sanitize(first) == sanitize(second)


@pytest.mark.parametrize(
    "text",
    [
        "int8 per-channel: mean cosine 0.9996, 8.06 bits per weight",
        "A 1,000 Hz control loop leaves 1.0 ms per step; 60 FPS leaves 16.7 ms per frame.",
        "7B in float32: 28.0 GB (26.1 GiB)",
        "perplexity 19.61 -> 38.9 (int4 per-channel)",
        "tensor([0.1000, 0.2000, 0.3000])",
    ],
)
def test_computed_results_are_left_alone(text: str) -> None:
    assert sanitize(text) == text
