"""Running an exported decoding step: the session, the decoder with its KV cache, greedy decoding.

:func:`quantlab.deploy.decoder.export_decoder` writes one decoding step of a Llama-style
language model as ONNX; this module runs it in ONNX Runtime one token at a time:

* :func:`decoder_session` -- an ONNX Runtime session whose worker threads are set for the
  few hundred small kernel calls of one token;
* :class:`OrtDecoder` -- the step with its key/value cache, bound in place (fused graph) or
  passed in whole (traced graph); ``step``, ``generate`` and ``nll``;
* :func:`greedy_decode` -- greedy generation with any one-token step function.

(These lived in ``quantlab.book.speed``, which re-exports them.)

Taught in: chapters/04c_speed.ipynb (Where the speed comes from).
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any, Callable, Optional, Sequence, Union

import numpy as np

__all__ = ["decoder_session", "OrtDecoder", "greedy_decode"]

PathLike = Union[str, os.PathLike]


def decoder_session(
    path: PathLike, threads: int = 1, *, spinning: Optional[bool] = None, profile_prefix: Optional[PathLike] = None
):
    """An ONNX Runtime CPU session for a decode step, with its worker threads set for one token.

    The settings of :func:`quantlab.deploy.ort_session` (all graph optimizations,
    ``intra_op_num_threads = threads``, ``session.x64quantprecision = 1``), and a choice of
    how the worker threads wait between kernels. A decode step of SmolLM2 is about 300
    kernel calls of 5-150 us each; with ``threads > 1`` every call hands part of its work to
    the workers and waits for them. A sleeping worker is woken by the kernel (a futex), which
    costs tens of microseconds per call; a spinning worker picks its part up at once.

    * ``spinning=True``: workers spin while a step runs (``session.intra_op.allow_spinning =
      1``) and stop when it returns (``session.force_spinning_stop = 1``), so that an idle
      decoder takes no core from the next one timed in turn or from the caller's own work.
    * ``spinning=False``: workers always sleep (``allow_spinning = 0``), as in
      :func:`~quantlab.deploy.ort_session`. Better where other processes hold the cores: a
      spinning worker then waits for a descheduled thread and burns its own time slice.
    * ``None`` (default): sleep, as ``False``. Measured on a 2-core Intel Xeon at normal
      priority with two decoders timed in turn (as the speed page does), spinning workers
      halved the tokens per second at 2 threads (float32 10.4 against 21.6, int4 36.6 against
      81.9); run alone at raised priority they raised it by 21-49% (the peer benchmark). Spin
      only where the decoder has the cores to itself.

    Args:
        path: an ``.onnx`` decode step (:func:`~quantlab.deploy.decoder.export_decoder`).
        threads: intra-op threads, a positive int.
        spinning: see above.
        profile_prefix: turn on ONNX Runtime's profiler (see ``ort_session``).

    Returns:
        ``onnxruntime.InferenceSession``.

    Raises:
        TypeError: ``threads`` is not an int, ``spinning`` neither a bool nor None.
        ValueError: ``threads`` < 1, or ``path`` is not a file.

    Taught in: chapters/04c_speed.ipynb (Where the speed comes from).
    """
    import onnxruntime as ort

    if isinstance(threads, bool) or not isinstance(threads, int):
        raise TypeError(f"threads must be a positive int, got {threads!r}")
    if threads < 1:
        raise ValueError(f"threads must be a positive int, got {threads}")
    if spinning is not None and not isinstance(spinning, bool):
        raise TypeError(f"spinning must be True, False or None, got {spinning!r}")
    if not Path(path).is_file():
        raise ValueError(f"path is not a file: {str(path)!r}")
    spin = bool(spinning)
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.add_session_config_entry("session.x64quantprecision", "1")
    opts.add_session_config_entry("session.intra_op.allow_spinning", "1" if spin else "0")
    opts.add_session_config_entry("session.force_spinning_stop", "1")
    if profile_prefix is not None:
        opts.enable_profiling = True
        opts.profile_file_prefix = str(profile_prefix)
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


class OrtDecoder:
    """Greedy decoding with an exported decode step (:func:`~quantlab.deploy.decoder.export_decoder`) in ONNX Runtime.

    For a fused graph the KV cache is one ONNX Runtime buffer per layer and kind, bound as
    both the input and the output of its attention node (``IOBinding``): the kernel writes
    the new key and value into slot ``position`` in place, and a step copies nothing but
    the token in and the logits out. For a traced graph (``fused=False``) the cache is held
    as numpy arrays, passed in whole every step, and each step's new keys and values are
    written into slot ``position``.

    The token, position and logits are numpy arrays that share their memory with the bound
    ONNX Runtime values, so a step writes three numbers and copies the logits out; nothing
    else crosses between Python and ONNX Runtime.

    Args:
        path: the exported ``.onnx`` file.
        threads: ONNX Runtime intra-op threads.
        profile_prefix: turn on ONNX Runtime's profiler (see
            :func:`quantlab.deploy.ort_session`).
        spinning: whether worker threads spin between the kernels of a step (and stop when
            it returns) instead of sleeping; None (default): they sleep. See
            :func:`decoder_session`.

    Attributes:
        session: the ``onnxruntime.InferenceSession``.
        cache_shape: ``(layers, kv_heads, max_len, head_dim)``.
        fused: whether the graph is the fused one.
    """

    def __init__(
        self,
        path: PathLike,
        threads: int = 1,
        profile_prefix: Optional[PathLike] = None,
        *,
        spinning: Optional[bool] = None,
    ) -> None:
        self.session = decoder_session(path, threads=threads, spinning=spinning, profile_prefix=profile_prefix)
        inputs = {i.name: i for i in self.session.get_inputs()}
        self.fused = "seqlens_k" in inputs
        if self.fused:
            layers = sum(1 for n in inputs if n.startswith("past_key."))
            shape = inputs["past_key.0"].shape if layers else []
            self.cache_shape = (layers, *shape[1:]) if len(shape) == 4 else ()
        else:
            shape = inputs["past_keys"].shape if "past_keys" in inputs else []
            self.cache_shape = tuple(shape)
        if len(self.cache_shape) != 4 or not all(isinstance(s, int) for s in self.cache_shape):
            raise ValueError(f"{path} is not a decode step from export_decoder (inputs {sorted(inputs)})")
        self.vocab = int(self.session.get_outputs()[0].shape[-1])
        self.reset()

    @property
    def max_len(self) -> int:
        return self.cache_shape[2]

    @property
    def cache_bytes(self) -> int:
        """Bytes of keys and values the cache holds (float32, all ``max_len`` slots)."""
        return 2 * int(np.prod(self.cache_shape)) * 4

    def cache_bytes_read(self, position: int) -> int:
        """Bytes of keys and values that the step at ``position`` reads.

        The fused graph's attention reads slots ``0..position``; the traced graph reads all
        ``max_len`` slots (and masks the unused ones).
        """
        slots = position + 1 if self.fused else self.max_len
        layers, kv, _, hd = self.cache_shape
        return 2 * layers * kv * slots * hd * 4

    def reset(self) -> None:
        """Empty the cache."""
        if not self.fused:
            self.keys = np.zeros(self.cache_shape, dtype=np.float32)
            self.values = np.zeros(self.cache_shape, dtype=np.float32)
            return
        import onnxruntime as ort

        layers, kv, slots, hd = self.cache_shape
        zeros = np.zeros((1, kv, slots, hd), dtype=np.float32)
        if not hasattr(self, "_binding"):
            self._binding = self.session.io_binding()
            # numpy arrays and the OrtValues bound to the graph share one buffer each
            self._ids_np = np.zeros((1, 1), dtype=np.int64)
            self._seqlens_np = np.zeros(1, dtype=np.int32)
            self._total_np = np.ones((), dtype=np.int32)
            self._logits_np = np.zeros((1, 1, self.vocab), dtype=np.float32)
            self._ids = ort.OrtValue.ortvalue_from_numpy(self._ids_np)
            self._seqlens = ort.OrtValue.ortvalue_from_numpy(self._seqlens_np)
            self._total = ort.OrtValue.ortvalue_from_numpy(self._total_np)
            self._logits = ort.OrtValue.ortvalue_from_numpy(self._logits_np)
            self._cache = [ort.OrtValue.ortvalue_from_numpy(zeros.copy()) for _ in range(2 * layers)]
            b = self._binding
            b.bind_ortvalue_input("input_ids", self._ids)
            b.bind_ortvalue_input("seqlens_k", self._seqlens)
            b.bind_ortvalue_input("total_sequence_length", self._total)
            b.bind_ortvalue_output("logits", self._logits)
            for i in range(layers):
                for j, kind in enumerate(("key", "value")):
                    buf = self._cache[2 * i + j]
                    b.bind_ortvalue_input(f"past_{kind}.{i}", buf)
                    b.bind_ortvalue_output(f"present_{kind}.{i}", buf)
        else:
            for buf in self._cache:
                buf.update_inplace(zeros)

    def step(self, token: int, position: int) -> np.ndarray:
        """Feed ``token`` at ``position``; returns the logits ``(vocab,)`` for the next token."""
        if not 0 <= position < self.max_len:
            raise ValueError(f"position must be in 0..{self.max_len - 1}, got {position}")
        if self.fused:
            self._ids_np[0, 0] = token  # the bound inputs read these buffers
            self._seqlens_np[0] = position
            self._total_np[()] = position + 1
            self.session.run_with_iobinding(self._binding)
            return self._logits_np[0, 0].copy()  # the next step overwrites the buffer
        logits, k, v = self.session.run(
            None,
            {
                "input_ids": np.array([token], dtype=np.int64),
                "position": np.array([position], dtype=np.int64),
                "past_keys": self.keys,
                "past_values": self.values,
            },
        )
        self.keys[:, :, position] = k[:, :, 0]
        self.values[:, :, position] = v[:, :, 0]
        return logits[0]

    def generate(self, prompt: Sequence[int], n: int) -> list[int]:
        """Greedy: feed ``prompt`` token by token, then ``n`` argmax tokens. Returns the new tokens."""
        return greedy_decode(self.step, prompt, n, reset=self.reset)

    def nll(self, tokens: Sequence[int]) -> tuple[float, int]:
        """Summed negative log-likelihood of ``tokens[1:]`` given the tokens before, and its count.

        ``math.exp(total / count)`` is the perplexity of one window, as
        :func:`quantlab.book.evaluation.perplexity` computes it with ``context = len(tokens)``.
        """
        tokens = [int(t) for t in tokens]
        if len(tokens) < 2 or len(tokens) > self.max_len:
            raise ValueError(f"need 2 to {self.max_len} tokens, got {len(tokens)}")
        self.reset()
        total = 0.0
        for pos, tok in enumerate(tokens[:-1]):
            logits = self.step(tok, pos).astype(np.float64)
            m = logits.max()
            total += float(m + np.log(np.exp(logits - m).sum()) - logits[tokens[pos + 1]])
        return total, len(tokens) - 1


def greedy_decode(
    step: Callable[[int, int], Any],
    prompt: Sequence[int],
    n: int,
    reset: Optional[Callable[[], None]] = None,
    times: Optional[list[float]] = None,
) -> list[int]:
    """Greedy generation with a one-token step function ``step(token, position) -> logits``.

    The prompt is fed one token at a time (positions ``0 .. len(prompt) - 1``), then each
    argmax is fed back, ``n`` times.

    Args:
        step: the decode step (e.g. :meth:`OrtDecoder.step`), returning the next-token logits.
        prompt: token ids, at least one.
        n: tokens to generate, >= 0.
        reset: called first (empties a cache), if given.
        times: if a list is given, the seconds of each generating step are appended to it
            (the prompt's steps are not timed).

    Returns:
        The ``n`` generated token ids.

    Raises:
        ValueError: an empty prompt or a negative ``n``.
    """
    prompt = [int(t) for t in prompt]
    if not prompt:
        raise ValueError("prompt must hold at least one token")
    if isinstance(n, bool) or not isinstance(n, int) or n < 0:
        raise ValueError(f"n must be an int >= 0, got {n!r}")
    if reset is not None:
        reset()
    for pos, tok in enumerate(prompt[:-1]):
        step(tok, pos)
    out: list[int] = []
    tok, pos = prompt[-1], len(prompt) - 1
    for _ in range(n):
        t0 = time.perf_counter()
        logits = step(tok, pos)
        tok = int(np.argmax(np.asarray(logits)))
        if times is not None:
            times.append(time.perf_counter() - t0)
        out.append(tok)
        pos += 1
    return out
