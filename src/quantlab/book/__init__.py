"""The book layer: the chapter's interactive tools, figures, experiments and models.

:mod:`~quantlab.book.explorer` (with its ``explorer_assets/``), :mod:`~quantlab.book.plotting`,
:mod:`~quantlab.book.sweeps`, :mod:`~quantlab.book.evaluation`,
:mod:`~quantlab.book.exercises`, :mod:`~quantlab.book.rl` and the model loaders of
:mod:`quantlab.book.models`. It may import every other layer; its heavy packages
(matplotlib, transformers, gymnasium, ...) are imported on first use. Package data
(sentences, stored policies) stays in ``quantlab/data``.
"""
