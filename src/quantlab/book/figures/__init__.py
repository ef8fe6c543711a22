"""Kernel-free interactive figures for the rendered book, one module per figure.

Each module computes what its figure shows with quantlab when the book is built and
returns one self-contained HTML fragment (``static_html``): inline styles, inline data,
one inline script, nothing loaded from anywhere, legible in the theme's light and dark
modes, operable from the keyboard and readable 390 px wide. :mod:`._page` holds what they
share (the fragment's frame, the styles and script helpers in ``assets/``).

* :mod:`.bits` -- Bits of a number: flip the bits of fp32 .. fp4, or type a value
  (chapters/03_core_tradeoff.ipynb);
* :mod:`.fit` -- Does it fit: weights, KV cache and overhead of a model against a GPU
  (chapters/01_why_quantization.ipynb);
* :mod:`.clip` -- Clip it: rounding and clipping error against the clip threshold on a
  real MiniLM layer and its activations (chapters/03b_range_calibration.ipynb);
* :mod:`.policy` -- Watch the policy: a CartPole episode of a stored policy in float32 and
  at fewer bits, side by side (chapters/05_rl.ipynb).

The modules are imported on first use (``from quantlab.book.figures import bits``).
"""

__all__ = ["bits", "fit", "clip", "policy"]
