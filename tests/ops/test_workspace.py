"""ops/workspace.py: the CPU row block linear_grpo_loss keeps between calls -- kept, reused,
per thread, capped, never aliased by a result, and counted by the benchmarks' peak memory."""
from __future__ import annotations

import threading

import pytest
import torch

from stepgrpo_fast.functional.grpo import linear_grpo_loss
from stepgrpo_fast.ops import chunking, workspace

V, H = 300, 16


def inputs(seed, b=2, t=12):
    g = torch.Generator().manual_seed(seed)
    return {"hidden": torch.randn(b, t, H, generator=g), "weight": torch.randn(V, H, generator=g) / 4,
            "targets": torch.randint(0, V, (b, t), generator=g), "mask": torch.ones(b, t),
            "adv": torch.randn(b, generator=g), "old": -5.7 + 0.3 * torch.randn(b, t, generator=g)}


def grads(x, **kw):
    leaves = [x["hidden"].clone().requires_grad_(), x["weight"].clone().requires_grad_()]
    loss, _ = linear_grpo_loss(leaves[0], leaves[1], x["targets"], x["mask"], x["adv"],
                               old_logp=x["old"], beta=0.0, impl="torch", **kw)
    return [loss.detach(), *torch.autograd.grad(loss, leaves)]


@pytest.fixture(autouse=True)
def small_rows(monkeypatch):
    monkeypatch.setattr(chunking, "LOGITS_CHUNK_BYTES", 4 * V * 8)   # 8-row blocks: 3 per call
    workspace.release()
    yield
    workspace.release()


def test_the_block_is_kept_reused_and_released():
    grads(inputs(0))
    assert workspace.kept_bytes() == 4 * V * 8
    first = workspace.block(V * 8, torch.float32, "cpu").data_ptr()
    grads(inputs(1))
    assert workspace.block(V * 8, torch.float32, "cpu").data_ptr() == first
    grads(inputs(1), entropy_coef=0.01)                   # two blocks: grown once
    assert workspace.kept_bytes() == 2 * 4 * V * 8
    workspace.release()
    assert workspace.kept_bytes() == 0


def test_results_never_alias_the_block():
    a = grads(inputs(0))
    kept = [t.clone() for t in a]
    grads(inputs(1))                                      # overwrites the block
    assert all(torch.equal(x, y) for x, y in zip(a, kept))
    assert all(torch.equal(x, y) for x, y in zip(a, grads(inputs(0))))


def test_threads_each_get_their_own_block_and_exact_results():
    want = [grads(inputs(s)) for s in range(4)]
    got, held, barrier = {}, {}, threading.Barrier(4)

    def work(s):
        barrier.wait()
        for _ in range(5):
            got[s] = grads(inputs(s))
        held[s] = workspace.block(V * 8, torch.float32, "cpu").data_ptr()

    threads = [threading.Thread(target=work, args=(s,)) for s in range(4)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert len(set(held.values())) == 4
    for s in range(4):
        assert all(torch.equal(x, y) for x, y in zip(got[s], want[s])), s


def test_a_block_over_the_cap_is_not_kept(monkeypatch):
    monkeypatch.setattr(workspace, "MAX_KEPT_BYTES", 4 * V * 8 - 4)
    grads(inputs(0))
    assert workspace.kept_bytes() == 0


def test_peak_memory_counts_the_block_even_after_a_warm_call():
    from stepgrpo_fast.bench.timing import peak_memory_bytes

    x = inputs(0)
    workspace.release()
    cold = peak_memory_bytes(lambda: grads(x))            # the block is allocated inside
    grads(x)                                              # warm: the block is kept ...
    assert workspace.kept_bytes() == 4 * V * 8
    warm = peak_memory_bytes(lambda: grads(x))            # ... and still counted
    assert abs(warm - cold) < 4 * V * 8 / 2, (warm, cold)
