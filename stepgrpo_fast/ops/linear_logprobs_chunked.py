"""linear_logprobs on torch: the chunked CPU (and CUDA-without-Triton) implementation, twin of
the Triton kernels in linear_logprobs.py (the oracle is reference/linear_logprobs.py).

    logits = (hidden @ weight.T + bias) / temperature           # [N, V], never built here
    logp[n]    = log_softmax(logits[n])[targets[n]]              # 0 where targets[n] == -100
    entropy[n] = -sum_v p[n, v] * log p[n, v]                    # 0 where targets[n] == -100

Token chunks x vocab chunks (chunking.plan_chunks) over one reused fp32 workspace, an online
logsumexp across vocab chunks, and a backward that recomputes each logits tile (4 GEMMs in all,
vs 3 for the naive path that keeps [N, V] alive):

    dZ = g_logp * (onehot - p) - g_ent * p * (log p + entropy)   (per row; / temperature for raw logits)
    dH = dZ @ W,   dW += dZ^T @ H,   db += sum_rows dZ

Without an entropy gradient dZ is never formed: per tile only P = exp(z - lse) is computed and
the row scale -g_logp and the one-hot term move into [c, H]-sized operands (see
``_backward_chunk_logp_only``). With it, dZ is built in place in the tile.

Only rows whose target is not ignored are computed (ignored rows are skipped, not masked).
Nothing here knows about autograd: functional/logprobs.py wraps these in an autograd.Function.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from ..formulas import IGNORE_INDEX
from .chunking import compute_dtype_for, iter_chunks, plan_chunks


@dataclass
class ChunkedForwardState:
    """What the backward needs besides the inputs: per-row logsumexp and entropy, row order."""

    lse: torch.Tensor              # [N] compute dtype (scaled logits' logsumexp; 0 for ignored rows)
    entropy: torch.Tensor | None   # [N] compute dtype, when asked
    rows: torch.Tensor | None      # [M] int64 indices of the non-ignored rows; None = all rows


class _Tiles:
    """Per-call workspace: one (or two, for entropy) fp32 logits tiles, reused for every chunk."""

    def __init__(self, rows: int, cols: int, n_tiles: int, dtype: torch.dtype, device,
                 bias: torch.Tensor | None = None):
        self.minus_inf = bias is not None and bool(torch.isneginf(bias).any())
        self.main = torch.empty(rows, cols, dtype=dtype, device=device)
        self.aux = torch.empty(rows, cols, dtype=dtype, device=device) if n_tiles > 1 else None

    def view(self, rows: int, cols: int) -> tuple[torch.Tensor, torch.Tensor | None]:
        # Tiles are viewed as contiguous [rows, cols] blocks of the flat buffer.
        main = self.main.view(-1)[: rows * cols].view(rows, cols)
        aux = None if self.aux is None else self.aux.view(-1)[: rows * cols].view(rows, cols)
        return main, aux


def _row_selection(targets: torch.Tensor) -> torch.Tensor | None:
    valid = targets != IGNORE_INDEX
    if bool(valid.all()):
        return None
    return valid.nonzero().squeeze(1)


def _take_rows(x: torch.Tensor, rows: torch.Tensor | None, start: int, stop: int) -> torch.Tensor:
    if rows is None:
        return x[start:stop]
    return x.index_select(0, rows[start:stop])


def _scaled_hidden(hidden: torch.Tensor, rows, start, stop, inv_temp: float,
                   dtype: torch.dtype) -> torch.Tensor:
    """hidden rows / temperature in the compute dtype: [c, H] (small; folds 1/T into the GEMM)."""
    h = _take_rows(hidden, rows, start, stop)
    if inv_temp != 1.0:
        return h.to(dtype) * inv_temp
    return h.to(dtype)


def _logits_tile(out: torch.Tensor, h_scaled: torch.Tensor, weight: torch.Tensor,
                 bias_scaled: torch.Tensor | None, v0: int, v1: int, dtype: torch.dtype,
                 row_shift: torch.Tensor | None = None):
    """out[c, v1-v0] = h_scaled @ weight[v0:v1].T (+ bias/T) (+ row_shift [c, 1]).

    The scaled logits of one tile; without a bias the row shift rides in the GEMM's input.
    Returns the weight rows used (in the compute dtype).
    """
    w = weight[v0:v1]
    if w.dtype != dtype:
        w = w.to(dtype)
    if bias_scaled is not None:
        torch.addmm(bias_scaled[v0:v1], h_scaled, w.T, out=out)
        if row_shift is not None:
            out.add_(row_shift)
    elif row_shift is not None:
        torch.addmm(row_shift, h_scaled, w.T, out=out)
    else:
        torch.mm(h_scaled, w.T, out=out)
    return w


def _target_columns(targets_c: torch.Tensor, v0: int, v1: int):
    """(local column [c,1] clamped into the tile, bool [c] whether the target is in the tile)."""
    inside = (targets_c >= v0) & (targets_c < v1)
    local = (targets_c - v0).clamp(0, v1 - v0 - 1).unsqueeze(1)
    return local, inside


def chunked_linear_logprobs_forward(hidden: torch.Tensor, weight: torch.Tensor,
                                    targets: torch.Tensor, bias: torch.Tensor | None = None,
                                    temperature: float = 1.0, return_entropy: bool = False, *,
                                    workspace_bytes: int | None = None,
                                    token_chunk: int | None = None):
    """hidden [N, H], weight [V, H], targets int [N], bias [V] | None.

    Returns (logp [N], entropy [N] | None, state) in the compute dtype (fp32, fp64 for fp64 inputs).
    Workspace: ``workspace_bytes`` of logits tiles plus O(chunk * H) -- independent of N.
    """
    n, vocab = hidden.shape[0], weight.shape[0]
    dtype = compute_dtype_for(hidden.dtype)
    inv_temp = 1.0 / float(temperature)
    rows = _row_selection(targets)
    m = n if rows is None else rows.numel()
    logp = torch.zeros(n, dtype=dtype, device=hidden.device)
    entropy = torch.zeros(n, dtype=dtype, device=hidden.device) if return_entropy else None
    lse = torch.zeros(n, dtype=dtype, device=hidden.device)
    state = ChunkedForwardState(lse=lse, entropy=entropy, rows=rows)
    if m == 0:
        return logp, entropy, state
    n_tiles = 2 if return_entropy else 1
    chunk_rows, chunk_cols = plan_chunks(m, vocab, workspace_bytes=workspace_bytes,
                                         token_chunk=token_chunk, n_tiles=n_tiles,
                                         itemsize=torch.finfo(dtype).bits // 8)
    tiles = _Tiles(chunk_rows, chunk_cols, n_tiles, dtype, hidden.device, bias)
    bias_scaled = None if bias is None else bias.to(dtype) * inv_temp
    for start, stop in iter_chunks(m, chunk_rows):
        c = stop - start
        h = _scaled_hidden(hidden, rows, start, stop, inv_temp, dtype)
        t = _take_rows(targets, rows, start, stop)
        run_max = torch.full((c,), float("-inf"), dtype=dtype, device=hidden.device)
        run_sum = torch.zeros(c, dtype=dtype, device=hidden.device)
        run_ylogy = torch.zeros(c, dtype=dtype, device=hidden.device)  # sum e^(z-max) (z-max)
        target_logit = torch.zeros(c, dtype=dtype, device=hidden.device)
        for v0, v1 in iter_chunks(vocab, chunk_cols):
            z, e = tiles.view(c, v1 - v0)
            _logits_tile(z, h, weight, bias_scaled, v0, v1, dtype)
            local, inside = _target_columns(t, v0, v1)
            target_logit += torch.where(inside, z.gather(1, local).squeeze(1), 0.0)
            new_max = torch.maximum(run_max, z.amax(1))
            z.sub_(new_max.unsqueeze(1))                          # y = z - max  (<= 0)
            if return_entropy:
                torch.exp(z, out=e)
                tile_sum = e.sum(1)
                # e * y then torch's cascade sum: a [1, V] x [V, 1] bmm accumulates the whole
                # row in one fp32 dot (rel. error 1e-5 at V = 151,936, entropy off by 4.6e-5)
                e.mul_(z)
                if tiles.minus_inf:   # -inf bias entries: e = 0, y = -inf -> 0, not NaN
                    e.nan_to_num_(nan=0.0, posinf=float("inf"), neginf=float("-inf"))
                tile_ylogy = e.sum(1)
            else:
                z.exp_()
                tile_sum = z.sum(1)
            if v0 == 0:
                run_sum, run_ylogy = tile_sum, (tile_ylogy if return_entropy else run_ylogy)
            else:
                shift = run_max - new_max                          # <= 0, finite after tile 0
                alpha = shift.exp()
                if return_entropy:
                    run_ylogy = alpha * (run_ylogy + shift * run_sum) + tile_ylogy
                run_sum = alpha * run_sum + tile_sum
            run_max = new_max
        log_sum = run_sum.log()
        chunk_lse = run_max + log_sum
        chunk_logp = target_logit - chunk_lse
        if rows is None:
            lse[start:stop], logp[start:stop] = chunk_lse, chunk_logp
        else:
            idx = rows[start:stop]
            lse.index_copy_(0, idx, chunk_lse)
            logp.index_copy_(0, idx, chunk_logp)
        if return_entropy:
            chunk_entropy = log_sum - run_ylogy / run_sum          # no lse - E[z] cancellation
            if rows is None:
                entropy[start:stop] = chunk_entropy
            else:
                entropy.index_copy_(0, rows[start:stop], chunk_entropy)
    return logp, entropy, state


def chunked_linear_logprobs_backward(hidden: torch.Tensor, weight: torch.Tensor,
                                     targets: torch.Tensor, bias: torch.Tensor | None,
                                     temperature: float, state: ChunkedForwardState,
                                     grad_logp: torch.Tensor | None,
                                     grad_entropy: torch.Tensor | None, *,
                                     need_hidden: bool = True, need_weight: bool = True,
                                     need_bias: bool = True,
                                     workspace_bytes: int | None = None,
                                     token_chunk: int | None = None):
    """Recompute each logits tile and form dZ in place; returns (dH, dW, db) or None each.

    grad_logp / grad_entropy: [N] or None (None = zero). dH in hidden.dtype [N, H], dW in
    weight.dtype [V, H] (accumulated in one fp32 buffer allocated once), db in bias.dtype [V].
    """
    n, vocab = hidden.shape[0], weight.shape[0]
    dtype = compute_dtype_for(hidden.dtype)
    device = hidden.device
    inv_temp = 1.0 / float(temperature)
    need_bias = need_bias and bias is not None
    rows = state.rows
    m = n if rows is None else rows.numel()
    use_entropy = grad_entropy is not None
    active = (m > 0 and (grad_logp is not None or use_entropy)
              and (need_hidden or need_weight or need_bias))
    # dH and dW are fully written by the first token chunk when there is work to do, so
    # they are not zero-filled (a 600 MB memset is ~1 s on these machines).
    alloc_h = torch.empty if active and rows is None else torch.zeros
    alloc_w = torch.empty if active else torch.zeros
    grad_h = alloc_h(n, hidden.shape[1], dtype=dtype, device=device) if need_hidden else None
    grad_w = alloc_w(vocab, weight.shape[1], dtype=dtype, device=device) if need_weight else None
    grad_b = torch.zeros(vocab, dtype=dtype, device=device) if need_bias else None
    if active:
        n_tiles = 2 if use_entropy else 1
        chunk_rows, chunk_cols = plan_chunks(m, vocab, workspace_bytes=workspace_bytes,
                                             token_chunk=token_chunk, n_tiles=n_tiles,
                                             itemsize=torch.finfo(dtype).bits // 8)
        tiles = _Tiles(chunk_rows, chunk_cols, n_tiles, dtype, device, bias)
        bias_scaled = None if bias is None else bias.to(dtype) * inv_temp
        dh_acc = torch.empty(chunk_rows, hidden.shape[1], dtype=dtype, device=device)
        for start, stop in iter_chunks(m, chunk_rows):
            c = stop - start
            h = _scaled_hidden(hidden, rows, start, stop, inv_temp, dtype)
            t = _take_rows(targets, rows, start, stop)
            neg_lse = -_take_rows(state.lse, rows, start, stop).unsqueeze(1)
            g_logp = (torch.zeros(c, dtype=dtype, device=device) if grad_logp is None
                      else _take_rows(grad_logp, rows, start, stop).to(dtype))
            dh = dh_acc[:c]
            if use_entropy:
                g_ent = _take_rows(grad_entropy, rows, start, stop).to(dtype)
                ent = _take_rows(state.entropy, rows, start, stop).unsqueeze(1)
                _backward_chunk_with_entropy(
                    tiles, h, weight, bias_scaled, t, neg_lse, g_logp, g_ent, ent, dh,
                    grad_w, grad_b, vocab, chunk_cols, inv_temp, dtype, need_hidden,
                    first=start == 0)
            else:
                _backward_chunk_logp_only(
                    tiles, h, weight, bias_scaled, t, neg_lse, g_logp, dh,
                    grad_w, grad_b, vocab, chunk_cols, inv_temp, dtype, need_hidden,
                    first=start == 0)
            if need_hidden:
                if rows is None:
                    torch.mul(dh, inv_temp, out=grad_h[start:stop])
                else:
                    grad_h.index_copy_(0, rows[start:stop], dh * inv_temp)
    out_h = None if grad_h is None else grad_h.to(hidden.dtype)
    out_w = None if grad_w is None else grad_w.to(weight.dtype)
    out_b = None if grad_b is None else grad_b.to(bias.dtype)
    return out_h, out_w, out_b


def _accumulate(out: torch.Tensor, a: torch.Tensor, b: torch.Tensor, first: bool) -> None:
    """out = a @ b on the first token chunk (out is uninitialised), out += a @ b after."""
    if first:
        torch.mm(a, b, out=out)
    else:
        out.addmm_(a, b)


def _backward_chunk_logp_only(tiles, h, weight, bias_scaled, t, neg_lse, g_logp, dh, grad_w,
                              grad_b, vocab, chunk_cols, inv_temp, dtype, need_hidden, *,
                              first):
    """dZ = g (onehot - P) for one token chunk, without forming dZ: the row scale -g moves into
    the GEMM operands (dH rows scaled after, dW via (-g h)) and the one-hot part is a gather /
    index_add on [c, H]. Per tile: GEMM, exp, two GEMMs.  dh <- unscaled dL/dh (times T)."""
    c = h.shape[0]
    neg_g = (-g_logp).unsqueeze(1)
    h_neg_g = h * neg_g if grad_w is not None else None          # [c, H], carries 1/T
    for v0, v1 in iter_chunks(vocab, chunk_cols):
        p, _ = tiles.view(c, v1 - v0)
        w = _logits_tile(p, h, weight, bias_scaled, v0, v1, dtype, row_shift=neg_lse)
        p.exp_()                                                   # P
        if need_hidden:
            _accumulate(dh, p, w, v0 == 0)
        if grad_w is not None:
            _accumulate(grad_w[v0:v1], p.T, h_neg_g, first)
        if grad_b is not None:
            grad_b[v0:v1].addmv_(p.T, neg_g.squeeze(1), alpha=inv_temp)
    if need_hidden:
        dh.mul_(neg_g).addcmul_(weight.index_select(0, t).to(dtype), g_logp.unsqueeze(1))
    if grad_w is not None:
        # index_put_(accumulate) handles repeated targets and is ~10x faster than index_add_ here
        grad_w.index_put_((t,), h * g_logp.unsqueeze(1), accumulate=True)
    if grad_b is not None:
        grad_b.index_put_((t,), g_logp * inv_temp, accumulate=True)


def _backward_chunk_with_entropy(tiles, h, weight, bias_scaled, t, neg_lse, g_logp, g_ent, ent,
                                 dh, grad_w, grad_b, vocab, chunk_cols, inv_temp, dtype,
                                 need_hidden, *, first):
    """dZ = g_l (onehot - p) - g_e p (log p + entropy), formed in place per tile."""
    c = h.shape[0]
    neg_g_logp = (-g_logp).unsqueeze(1)
    neg_g_ent = (-g_ent).unsqueeze(1)
    for v0, v1 in iter_chunks(vocab, chunk_cols):
        z, aux = tiles.view(c, v1 - v0)
        w = _logits_tile(z, h, weight, bias_scaled, v0, v1, dtype, row_shift=neg_lse)  # log p
        torch.add(z, ent, out=aux)                     # log p + entropy
        z.exp_()                                       # p
        aux.mul_(z)                                    # p (log p + entropy)
        if tiles.minus_inf:                            # 0 * -inf at -inf bias entries -> 0
            aux.nan_to_num_(nan=0.0, posinf=float("inf"), neginf=float("-inf"))
        z.mul_(neg_g_logp)
        z.addcmul_(aux, neg_g_ent)                     # - g_l p - g_e p (log p + entropy)
        local, inside = _target_columns(t, v0, v1)
        z.scatter_add_(1, local, torch.where(inside, g_logp, 0.0).unsqueeze(1))
        # z = dL/d(scaled logits); d(raw logits) = z / T, folded into the GEMMs and dh.
        if need_hidden:
            _accumulate(dh, z, w, v0 == 0)
        if grad_w is not None:
            _accumulate(grad_w[v0:v1], z.T, h, first)  # h already carries 1/T
        if grad_b is not None:
            grad_b[v0:v1].add_(z.sum(0), alpha=inv_temp)
