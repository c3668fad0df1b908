"""Linear log-probs in plain torch: the naive oracle (tests compare every implementation to it,
in float64; the benchmarks' naive baseline).

    logits = (hidden @ weight.T + bias) / temperature           # [N, V], materialised
    logp[n]    = log_softmax(logits[n])[targets[n]]              # 0 where targets[n] == -100
    entropy[n] = -sum_v p[n, v] * log p[n, v]                    # 0 where targets[n] == -100

The implementations: ops/linear_logprobs_chunked.py (torch) and ops/linear_logprobs.py (Triton).
"""
from __future__ import annotations

import torch

from ..formulas import IGNORE_INDEX


def linear_logprobs_naive(hidden: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor, *,
                          bias: torch.Tensor | None = None, temperature: float = 1.0,
                          return_entropy: bool = False,
                          compute_dtype: torch.dtype = torch.float32,
                          logits_dtype: torch.dtype | None = None):
    """Materialise [.., V] logits in ``compute_dtype``; log_softmax; gather. Differentiable.

    hidden [..., H], weight [V, H], targets [...] (-100 ignored), bias [V] -> logp [...]
    (and entropy [...]) in ``compute_dtype``. ``logits_dtype``: dtype of the logits GEMM
    (default ``compute_dtype``; the benchmarks' naive baseline passes the input dtype, as an LM
    head computes it), cast to ``compute_dtype`` before everything else.
    """
    gemm_dtype = compute_dtype if logits_dtype is None else logits_dtype
    logits = (hidden.to(gemm_dtype) @ weight.to(gemm_dtype).T).to(compute_dtype)
    if bias is not None:
        logits = logits + bias.to(compute_dtype)
    logits = logits / temperature
    log_probs = torch.log_softmax(logits, dim=-1)
    valid = targets != IGNORE_INDEX
    safe = torch.where(valid, targets, torch.zeros_like(targets)).long()
    logp = log_probs.gather(-1, safe.unsqueeze(-1)).squeeze(-1)
    logp = torch.where(valid, logp, torch.zeros_like(logp))
    if not return_entropy:
        return logp
    p = log_probs.exp()       # 0 log 0 = 0: a -inf logit (bias entry) must not make NaN
    entropy = -(p * torch.where(p > 0, log_probs, torch.zeros_like(log_probs))).sum(-1)
    return logp, torch.where(valid, entropy, torch.zeros_like(entropy))
