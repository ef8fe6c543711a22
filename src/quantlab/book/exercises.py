"""Checkers for the "Build it yourself" exercises: write a quantizer in numpy, get told what is wrong.

The chapter's "Build it yourself" section asks readers to write the core of quantization
themselves, a few lines of numpy each: symmetric and asymmetric quantizers, int4 packing
and one GPTQ column step. Each ``check_*`` function here runs the reader's functions on
fixed test cases, compares them with a reference and answers in words: a
:class:`CheckResult` that says "passed", or names the mistake it recognised (floor instead
of round, the wrong ``qmax``, a zero point with the wrong sign, swapped nibbles, ...) and
shows where it shows up. Exceptions raised by the reader's code are caught and reported,
never propagated. In Jupyter a result displays as a green "✓ passed" or red "✗ ..." line.

Checkers:

* :func:`check_symmetric` -- one absmax scale per tensor, signed codes ``-qmax..qmax``.
* :func:`check_asymmetric` -- min/max scale and zero point, unsigned codes ``0..2^bits-1``.
* :func:`check_pack_int4` -- two signed 4-bit codes per byte, as :func:`quantlab.pack` does.
* :func:`check_gptq_step` -- one column of GPTQ, as :mod:`quantlab.gptq` does it.

Conventions shared by the checkers:

* **Test cases avoid exact rounding ties** (``x / scale`` never ends in ``.5``), so
  numpy's round-half-to-even (``np.round``, what the references use) and
  round-half-away-from-zero both pass.
* **Codes** may be returned as an integer array or as a float array holding integers
  (``np.round`` returns floats); codes with a fraction are reported as not rounded.
  Storing them in a small integer type (``np.int8``, ``np.uint8``) is what saves memory
  in practice, but it is not required here.
* ``dequantize`` is called with the *reference* codes (an ``int64`` array) and parameters,
  so a mistake in ``quantize`` is not reported twice.

The checkers live by exercise family, and this module re-exports them:
:mod:`~quantlab.book.exercises_common` (:class:`CheckResult` and the diagnosis helpers),
:mod:`~quantlab.book.exercises_quantizers` (symmetric, asymmetric),
:mod:`~quantlab.book.exercises_packing` (int4 packing), :mod:`~quantlab.book.exercises_gptq`
(the GPTQ column step).

Example::

    from quantlab.exercises import check_symmetric

    def quantize(x, bits):
        qmax = 2 ** (bits - 1) - 1
        scale = np.abs(x).max() / qmax
        return np.clip(np.round(x / scale), -qmax, qmax), scale

    def dequantize(codes, scale):
        return codes * scale

    check_symmetric(quantize, dequantize)   # ✓ passed: ...
"""

from .exercises_common import CheckResult
from .exercises_gptq import check_gptq_step
from .exercises_packing import check_pack_int4
from .exercises_quantizers import check_asymmetric, check_symmetric

__all__ = ["CheckResult", "check_symmetric", "check_asymmetric", "check_pack_int4", "check_gptq_step"]
