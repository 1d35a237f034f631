"""TODO: lm.chunked_loss (from model)."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def output_and_loss(x, weight, targets=None, reduction: str = "mean"):
    """(logits, loss) of the output layer `weight` (vocab, hidden) on hidden states x (B, T, hidden), loss
    being next-token cross-entropy with targets (B, T), -1 ignored.

    The mean loss on CPU never builds the (B*T, vocab) logits: `_ChunkedCrossEntropy` computes the loss
    and its gradients a few hundred rows at a time (logits None then). For the 1M model (hidden 64, vocab
    10k, 4,096 tokens a step) the output layer and loss took 2.5x less time this way, forward and backward
    on 2 CPU threads, and the 164 MB of logits, their log-softmax and their gradient are never held.
    Under CPU autocast (`train.cpu_bf16`) the chunks' three matmuls run in bf16, the softmax in fp32.
    Other reductions, GPUs (bf16 autocast; compiled graphs fuse the loss themselves) and `torch.compile`
    take the plain path."""
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


def cpu_autocast_dtype() -> torch.dtype | None:
    """The dtype CPU autocast runs matmuls in, or None when it is off (torch 2.2-2.3 spell it differently)."""
    try:
        on = torch.is_autocast_enabled("cpu")  # torch >= 2.4
    except TypeError:
        on = torch.is_autocast_cpu_enabled()
    if not on:
        return None
    get = getattr(torch, "get_autocast_dtype", None)
    return get("cpu") if get is not None else torch.get_autocast_cpu_dtype()


def _chunk_rows(vocab: int) -> int:
    return max(32, 2_560_000 // vocab)  # ~10 MB of fp32 logits a chunk: 256 rows at vocab 10k


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
    step = _chunk_rows(weight.size(0))
    with torch.autocast("cpu", enabled=False):  # the dtypes are chosen here, not by autocast
        for s in range(0, h.size(0), step):
            hc, yc = hm[s : s + step], y[s : s + step]
            z = (hc @ wm.t()).to(acc)
            valid = yc != -1
            yc = yc.clamp(min=0)[:, None]
            lse = torch.logsumexp(z, -1)
            total += ((lse - z.gather(1, yc).squeeze(1)) * valid).sum()
            if grads:  # z becomes the gradient of this chunk's loss sum w.r.t. its logits, in place
                z.sub_(lse[:, None]).exp_()
                z.scatter_add_(1, yc, -valid[:, None].to(z.dtype))
                z.mul_(valid[:, None])
                z = z.to(wm.dtype)
                gh[s : s + step] = z @ wm
                if lowp is None:
                    gw.addmm_(z.t(), hc)
                else:
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
