"""The output layer and next-token cross-entropy fused and chunked, for training and evaluating on CPU.

The plain loss builds the (B*T, vocab) logits, then their log-softmax, and in backward a gradient of the
same size: three passes over the largest tensor of a small model's step, and the memory to hold them.
`output_and_loss` instead computes, a few hundred rows at a time, the logits, their logsumexp and the
loss, and (when gradients are wanted) turns those logits in place into softmax - onehot, the gradient of
the loss with respect to them, which it multiplies straight into the gradients of the hidden states and
of the output weight. Backward then only scales the two gradients kept from the forward pass. So the full
logits are never held, and each chunk's logits are made and read once. Why this pays on CPU and what it
saves: BENCHMARKS.md, section 1.

It is the same loss and the same gradients as F.cross_entropy(F.linear(x, weight)), to float64 rounding
(tests/test_model.py). GPUs, `torch.compile` (whose graphs fuse the loss themselves), other reductions
and callers that want the logits take the plain path.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from tinystories_lib.lm.cpu_autocast import cpu_autocast_dtype


def output_and_loss(x, weight, targets=None, reduction: str = "mean"):
    """(logits, loss) of the output layer `weight` (vocab, hidden) on hidden states x (B, T, hidden), loss
    being next-token cross-entropy with targets (B, T), -1 ignored.

    The mean loss on CPU takes the chunked path (logits None then); under CPU autocast (`train.cpu_bf16`)
    the chunks' three matmuls run in its dtype, the softmax in fp32. Everything else is the plain
    F.linear + F.cross_entropy."""
    if targets is None or reduction != "mean" or x.device.type != "cpu" or _compiling():
        logits = F.linear(x, weight)
        if targets is None:
            return logits, None
        loss = F.cross_entropy(logits.view(-1, logits.size(-1)).float(), targets.reshape(-1),
                               ignore_index=-1, reduction=reduction)
        return logits, loss
    h, y = x.reshape(-1, x.size(-1)), targets.reshape(-1)
    lowp = cpu_autocast_dtype()  # under CPU autocast the chunks' matmuls run in its dtype, the softmax in fp32
    if torch.is_grad_enabled() and (h.requires_grad or weight.requires_grad):
        return None, _ChunkedCrossEntropy.apply(h, weight, y, lowp)
    with torch.no_grad():
        return None, _chunked_loss_sum(h, weight, y, lowp=lowp)[0] / (y != -1).sum().clamp(min=1)


def _compiling() -> bool:
    compiling = getattr(torch.compiler, "is_compiling", None)  # torch >= 2.3
    return bool(compiling and compiling())


def _chunk_rows(vocab: int, hidden: int) -> int:
    """Rows a chunk: ~20 MB of fp32 logits (512 rows at vocab 10k), more for wide models, where each chunk
    also reads and writes the whole (vocab, hidden) weight gradient (1,536 rows at hidden 768)."""
    return max(32, 5_120_000 // vocab) * max(1, hidden // 256)


def _chunked_loss_sum(h, weight, y, grads: bool = False, lowp: torch.dtype | None = None):
    """Summed cross-entropy of rows h (N, C) against weight (V, C), chunk by chunk. With `grads`, also
    the gradients of that sum: d/dh (N, C) and d/dweight (V, C), from softmax - onehot of each chunk.
    With `lowp` (bf16), the three matmuls take h and weight cast once to it; the softmax, the loss and
    the gradients' sums stay in fp32."""
    acc = torch.promote_types(h.dtype, torch.float32)  # the softmax in fp32 (or fp64) whatever the weights
    total = h.new_zeros((), dtype=acc)
    gh = torch.empty_like(h) if grads else None
    gw = torch.zeros_like(weight) if grads else None
    hm, wm = (h.to(lowp), weight.to(lowp)) if lowp is not None else (h, weight)
    step = _chunk_rows(*weight.shape)
    ignored = bool((y == -1).any())
    with torch.autocast("cpu", enabled=False):  # the dtypes are chosen here, not by autocast
        for s in range(0, h.size(0), step):
            hc, yc = hm[s : s + step], y[s : s + step]
            z = torch.log_softmax((hc @ wm.t()).to(acc), -1)  # one fused pass (logsumexp takes several)
            valid = yc != -1
            yc = yc.clamp(min=0)[:, None]
            nll = z.gather(1, yc).squeeze(1).neg_()
            total += (nll * valid).sum() if ignored else nll.sum()
            if grads:  # z becomes the gradient of this chunk's loss sum w.r.t. its logits, in place
                z.exp_()  # softmax
                if ignored:
                    z.scatter_add_(1, yc, -valid[:, None].to(z.dtype))
                    z.mul_(valid[:, None])
                else:
                    z.scatter_add_(1, yc, torch.full(yc.shape, -1.0, dtype=z.dtype))
                if lowp is None:
                    torch.mm(z, wm, out=gh[s : s + step])
                    gw.addmm_(z.t(), hc)
                else:
                    z = z.to(wm.dtype)
                    gh[s : s + step] = z @ wm
                    gw += z.t() @ hc
    return total, gh, gw


class _ChunkedCrossEntropy(torch.autograd.Function):
    """Mean cross-entropy of F.linear(h, weight) against y, with the gradients made in the forward pass
    (one pass over each chunk's logits instead of the three that logits, log_softmax and their backward
    take), kept until backward scales them."""

    @staticmethod
    def forward(ctx, h, weight, y, lowp=None):
        total, gh, gw = _chunked_loss_sum(h, weight, y, grads=True, lowp=lowp)
        n = (y != -1).sum().clamp(min=1)
        ctx.save_for_backward(gh, gw, n)
        return total / n

    @staticmethod
    def backward(ctx, grad):
        gh, gw, n = ctx.saved_tensors
        scale = grad / n
        return gh * scale.to(gh.dtype), gw * scale.to(gw.dtype), None, None
