"""Small randomly initialised models the tests build offline (no weights are downloaded)."""

from __future__ import annotations

import torch


def tiny_llama(*, std: float = 0.1, tied: bool = False, random_norms: bool = False, seed: int = 0):
    """A 2-block ``LlamaForCausalLM`` (hidden 64, 4 heads, 2 KV heads, vocabulary 96) in eval mode.

    Args:
        std: the Linear and embedding weights are drawn from N(0, std^2), larger than the
            default initialisation so that logits are not near-ties.
        tied: tie the output head to the token embeddings.
        random_norms: RMSNorm weights drawn from U(0.5, 1.5) instead of ones (so that folding
            them into the next layers matters).
        seed: seeds the draws; the global random state is left as it was.
    """
    import transformers

    cfg = transformers.LlamaConfig(
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        vocab_size=96,
        max_position_embeddings=128,
        tie_word_embeddings=tied,
    )
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = transformers.LlamaForCausalLM(cfg).eval()
        with torch.no_grad():
            for name, p in model.named_parameters():
                if name.endswith("norm.weight"):
                    if random_norms:
                        p.copy_(0.5 + torch.rand_like(p))
                else:
                    p.normal_(0.0, std)
    return model
