"""Token-weighted cross-entropy, chunked so full float32 logits never exist at once.

The loss of one micro-batch is ``sum_t w_t * CE_t / normaliser`` where the normaliser is
the sum of weights over the whole optimizer step (every micro-batch of a gradient-
accumulation window, every data-parallel rank). Summed over the window and averaged by
DDP it is the weighted mean over the step's tokens, so batch 4 x accumulation 1 and batch
1 x accumulation 4 give the same gradients.

Only rows with a non-zero weight are projected through the output layer, a chunk at a
time; each chunk's gradient is computed right away (as Liger's fused linear
cross-entropy does) so backward keeps ``[rows, hidden]`` and ``[vocab, hidden]``
gradients, not ``[rows, vocab]`` logits.

Try it: ``python -m model_garden.training.loss`` compares it with the plain path.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

DEFAULT_CHUNK = 512


class _ChunkedLinearCE(torch.autograd.Function):
    @staticmethod
    def forward(ctx, hidden, weight, bias, targets, weights, normaliser, chunk):  # noqa: D401
        need_h, need_w = hidden.requires_grad, weight.requires_grad
        need_b = bias is not None and bias.requires_grad
        total = torch.zeros((), dtype=torch.float32, device=hidden.device)
        grad_h = torch.empty_like(hidden) if need_h else None
        grad_w = torch.zeros_like(weight, dtype=torch.float32) if need_w else None
        grad_b = torch.zeros_like(bias, dtype=torch.float32) if need_b else None
        # Dtypes are chosen here, not by autocast: the matmuls run in autocast's dtype
        # when it is on (bf16 under mixed precision), the softmax and gradients in float32.
        device = hidden.device.type
        dtype = torch.get_autocast_dtype(device) if torch.is_autocast_enabled(device) else hidden.dtype
        with torch.autocast(device_type=device, enabled=False):
            w_mat = weight.to(dtype)
            b_vec = bias.to(dtype) if bias is not None else None
            for lo in range(0, hidden.shape[0], chunk):
                h = hidden[lo : lo + chunk].to(dtype)
                t = targets[lo : lo + chunk]
                w = weights[lo : lo + chunk] / normaliser
                logits = F.linear(h, w_mat, b_vec).float()
                picked = logits.gather(1, t[:, None]).squeeze(1)
                peak = logits.amax(dim=-1, keepdim=True)
                probs = logits.sub_(peak).exp_()  # in place: one [chunk, vocab] buffer
                norm = probs.sum(dim=-1, keepdim=True)
                total += ((norm.log() + peak).squeeze(1) - picked).mul(w).sum()
                if need_h or need_w or need_b:
                    # d(w * CE)/dlogits = w * (softmax - onehot)
                    probs.div_(norm)
                    probs[torch.arange(len(t), device=t.device), t] -= 1.0
                    probs.mul_(w[:, None])
                    if need_h:
                        grad_h[lo : lo + chunk] = (probs.to(dtype) @ w_mat).to(hidden.dtype)
                    if need_w:
                        grad_w.addmm_(probs.t(), h.float())
                    if need_b:
                        grad_b += probs.sum(0)
        ctx.save_for_backward(grad_h, grad_w, grad_b)
        ctx.dtypes = (weight.dtype, bias.dtype if bias is not None else None)
        return total

    @staticmethod
    def backward(ctx, grad_out):
        grad_h, grad_w, grad_b = ctx.saved_tensors
        w_dtype, b_dtype = ctx.dtypes
        gh = grad_h * grad_out.to(grad_h.dtype) if grad_h is not None else None
        gw = (grad_w * grad_out).to(w_dtype) if grad_w is not None else None
        gb = (grad_b * grad_out).to(b_dtype) if grad_b is not None else None
        return gh, gw, gb, None, None, None, None


def weighted_lm_loss(
    hidden: torch.Tensor,
    head: torch.nn.Linear,
    labels: torch.Tensor,
    loss_weights: torch.Tensor,
    normaliser: torch.Tensor | float,
    chunk: int = DEFAULT_CHUNK,
) -> torch.Tensor:
    """Weighted next-token cross-entropy from final hidden states.

    Args:
        hidden: ``[batch, seq, hidden]`` final hidden states (the output layer's input).
        head: The output layer (``lm_head``).
        labels: ``[batch, seq]`` aligned with the inputs (-100 = not trained); shifted here.
        loss_weights: ``[batch, seq]`` aligned with ``labels``.
        normaliser: Sum of weights over the optimizer step (all micro-batches and ranks).
        chunk: Rows projected to the vocabulary at a time.

    Returns:
        A scalar: ``sum(w * CE) / normaliser`` over this micro-batch.
    """
    targets = labels[:, 1:]
    weights = loss_weights[:, 1:].to(torch.float32) * (targets != -100)
    keep = weights > 0
    rows = hidden[:, :-1][keep]
    if rows.shape[0] == 0:
        # Still touch the graph so every data-parallel rank runs the same backward.
        return (hidden.sum() + head.weight.sum()) * 0.0
    norm = torch.as_tensor(normaliser, dtype=torch.float32, device=hidden.device).clamp_min(1e-8)
    return _ChunkedLinearCE.apply(rows, head.weight, _bias(head), targets[keep], weights[keep], norm, chunk)



def _bias(head: torch.nn.Module) -> torch.Tensor | None:
    """The output layer's bias. PEFT's trainable-tokens wrapper (new token rows trained with
    LoRA) exposes only the merged ``weight``; the bias stays on the layer it wraps."""
    if hasattr(head, "bias"):
        return head.bias
    return getattr(getattr(head, "original_module", None), "bias", None)


def reference_lm_loss(logits: torch.Tensor, labels: torch.Tensor, loss_weights: torch.Tensor, normaliser: float) -> torch.Tensor:
    """The plain path (full logits), for tests and benchmarks."""
    targets = labels[:, 1:]
    weights = loss_weights[:, 1:].float() * (targets != -100)
    ce = F.cross_entropy(logits[:, :-1].float().flatten(0, 1), targets.clamp_min(0).flatten(), reduction="none")
    return (ce * weights.flatten()).sum() / normaliser


if __name__ == "__main__":
    torch.manual_seed(0)
    head = torch.nn.Linear(64, 1000, bias=False)
    hidden = torch.randn(2, 16, 64, requires_grad=True)
    labels = torch.randint(0, 1000, (2, 16))
    labels[:, :5] = -100
    weights = (labels != -100).float()
    a = weighted_lm_loss(hidden, head, labels, weights, weights[:, 1:].sum(), chunk=7)
    b = reference_lm_loss(head(hidden), labels, weights, weights[:, 1:].sum())
    print(f"chunked {a.item():.6f} plain {b.item():.6f}")
