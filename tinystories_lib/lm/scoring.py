"""Losses that compare across tokenizers: bits per byte of text.

A loss in nats per token depends on the tokenizer (a larger vocabulary packs more text into a token), so
the kit also reports bits per UTF-8 byte of the stories, the measure llama2.c's and the published models'
numbers can be set beside:

    bits per byte = (sum of next-token NLL in nats) / ln 2 / (UTF-8 bytes of the text)

`text_bytes` counts a story's bytes plus one for the separator that ends it (the `<|endoftext|>` token
stands for one newline). `shard_nll` scores a whole token shard in non-overlapping windows of the
model's context, each token predicted from the window's earlier tokens; only the shard's first token is
given, not predicted.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import numpy as np
import torch


def text_bytes(texts: Iterable[str]) -> int:
    """UTF-8 bytes of the stories, one more per story for its separator."""
    return sum(len(t.encode("utf-8")) + 1 for t in texts)


def bits_per_byte(nll_nats: float, n_bytes: int) -> float:
    return nll_nats / math.log(2) / n_bytes


LOGITS_BUDGET = 2**28  # bytes of fp32 logits per batch: long contexts and large vocabularies take fewer rows


@torch.no_grad()
def shard_nll(model, data: np.ndarray, batch_size: int | None = None, device: str | torch.device | None = None
              ) -> tuple[float, int]:
    """(sum of next-token NLL in nats, tokens predicted) over a whole token shard, on the model's device;
    `batch_size` windows at a time (default: as many as fit LOGITS_BUDGET)."""
    import torch.nn.functional as F

    ctx = model.cfg.context
    device = device or next(model.parameters()).device
    batch_size = batch_size or max(1, LOGITS_BUDGET // (4 * ctx * model.cfg.vocab_size))
    was_training = model.training
    model.eval()
    starts = range(0, len(data) - 1, ctx)
    full = [s for s in starts if s + ctx + 1 <= len(data)]
    last = [s for s in starts if s + ctx + 1 > len(data)]  # at most one window, shorter than the context
    total, n = 0.0, 0
    for batch in [full[i:i + batch_size] for i in range(0, len(full), batch_size)] + [[s] for s in last]:
        width = min(ctx, len(data) - 1 - batch[0])
        win = torch.from_numpy(np.stack([data[s:s + width + 1] for s in batch]).astype(np.int64)).to(device)
        logits, _ = model(win[:, :-1])
        total += F.cross_entropy(logits.float().reshape(-1, logits.size(-1)), win[:, 1:].reshape(-1),
                                 reduction="sum").item()
        n += win[:, 1:].numel()
    model.train(was_training)
    return total, n
