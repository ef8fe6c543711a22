"""The book layer: the chapter's interactive tools, figures, experiments and models.

:mod:`~quantlab.book.explorer` (with its ``explorer_assets/``), :mod:`~quantlab.book.plotting`,
:mod:`~quantlab.book.sweeps`, :mod:`~quantlab.book.evaluation`,
:mod:`~quantlab.book.exercises` (its checkers in ``exercises_common``, ``exercises_quantizers``,
``exercises_packing``, ``exercises_gptq``), :mod:`~quantlab.book.rl` (its parts ``rl_policy``,
``rl_reinforce``, ``rl_quantize``, ``rl_qat``, ``rl_stored``), :mod:`~quantlab.book.rl_train`
(PPO with quantized actors), :mod:`~quantlab.book.rl_speed` (how fast they act),
:mod:`~quantlab.book.speed`, :mod:`~quantlab.book.smollm_study` (the SmolLM2 settings of the
deep dive beyond int4), the kernel-free figures of :mod:`quantlab.book.figures` (with
their ``assets/``) and the model loaders of :mod:`quantlab.book.models`. It may
import every other layer; its heavy packages (matplotlib, transformers, gymnasium, ...) are
imported on first use. Package data
(sentences, stored policies) stays in ``quantlab/data``.
"""

from types import ModuleType

from quantlab.core.lazy import submodule


def __getattr__(name: str) -> ModuleType:
    """``quantlab.book.<module>`` after a plain ``import quantlab`` (:func:`quantlab.core.lazy.submodule`)."""
    return submodule(__name__, name)
