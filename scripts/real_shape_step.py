"""One StepGRPO step on a full-depth Qwen2-VL-2B-shaped model on the CPU: seconds and peak RSS
per phase, with the fused LM head or with plain logits.

    python scripts/real_shape_step.py --build                 # once: the 28-layer checkpoint
    python scripts/real_shape_step.py --head fused            # then each head in its own process
    python scripts/real_shape_step.py --head plain

The checkpoint is stepgrpo_fast.synthetic.real_shapes' Qwen2-VL-2B-Instruct shape at full depth (28
decoder layers, 32 vision blocks, the real tokenizer, vocab 151,936, tied head, bf16 download,
random weights; ~4.4 GB on disk). The step is the native trainer's (trainer/rl/grpo_loop.py steps
3-6) with its own pieces, timed phase by phase:

    rollout    generate_rollouts: B=1 prompt (one image) x M samples, exactly --new-tokens each
               (EOS suppressed, so every row has the same length)
    rewards    build_episodes (StepRAR + StepRVR) -> advantages; a random model scores 0
               everywhere, so fixed advantages (+1, -1, ...) replace all-zero ones
    reference  log-probs of the frozen start model (held in the compute dtype)
    update     the GRPO loss forward + backward + clip + AdamW step of the trained subset

--head fused: completion_logprobs / PolicyObjective (linear_logprobs, linear_grpo_loss: no
[N, C, V] logits); --head plain: model(..., logits_to_keep=C+1).logits -> log_softmax -> gather
-> grpo_loss, as an HF-style trainer computes them. Precision as ``dtype: bfloat16``: fp32 master
weights, bf16 autocast, the reference in bf16. Peak RSS per phase from /proc/self/status VmHWM,
reset before each phase (/proc/self/clear_refs). Linux only.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import platform
import re
import sys
import time

DEFAULT_DIR = pathlib.Path(os.environ.get("TMPDIR", "/tmp")) / "stepgrpo_real_qwen2_vl_2b_full"
DEFAULT_TRAIN = [r"language_model\.layers\.(26|27)\.", r"language_model\.norm\."]
GB = 1e9


def _rss(field: str) -> float:
    """VmRSS / VmHWM of this process in GB."""
    for line in pathlib.Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024 / GB
    raise RuntimeError(f"/proc/self/status has no {field}")


def _reset_peak() -> None:
    pathlib.Path("/proc/self/clear_refs").write_text("5")  # VmHWM := VmRSS


class Phases:
    def __init__(self) -> None:
        self.rows: list[dict] = []

    def run(self, name: str, fn):
        _reset_peak()
        start_rss, t0 = _rss("VmRSS"), time.perf_counter()
        out = fn()
        seconds = time.perf_counter() - t0
        self.rows.append(
            {"phase": name, "seconds": seconds, "rss_before_gb": start_rss,
             "peak_rss_gb": _rss("VmHWM"), "rss_after_gb": _rss("VmRSS")}
        )  # fmt: skip
        return out


def build(out_dir: pathlib.Path, num_layers: int, vision_depth: int) -> None:
    from stepgrpo_fast.synthetic import real_shapes

    t0 = time.perf_counter()
    real_shapes.build_real_shaped_checkpoint(
        out_dir, "qwen2_vl", num_layers=num_layers, vision_depth=vision_depth
    )
    print(f"built {out_dir} in {time.perf_counter() - t0:.0f} s")


def full_finetune_gb(n_params: int, ref_bytes: int) -> dict[str, float]:
    """fp32 weights + fp32 grads + AdamW (2 fp32 moments) + a reference copy, in GB."""
    parts = {"weights_fp32": 4 * n_params, "grads_fp32": 4 * n_params,
             "adamw_fp32": 8 * n_params, "reference": ref_bytes * n_params}  # fmt: skip
    return {k: v / GB for k, v in {**parts, "total": sum(parts.values())}.items()}


def plain_logprobs(model, batch, temperature: float):
    """log softmax(logits / T) of the completion tokens via the model's own logits [N, C+1, V]."""
    import torch

    bare = model.model
    if hasattr(bare, "rope_deltas"):
        bare.rope_deltas = None  # generate() leaves per-batch 3D rope deltas behind
    c = batch.completion_ids.shape[1]
    logits = model(**batch.model_inputs, logits_to_keep=c + 1, use_cache=False).logits[:, :-1]
    logp = torch.log_softmax(logits.float() / temperature, dim=-1)
    return logp.gather(-1, batch.completion_ids.unsqueeze(-1)).squeeze(-1)  # [N, C]


def step(args) -> dict:
    import torch

    import stepgrpo_fast as sg
    from stepgrpo_fast.synthetic.task import write_dataset
    from stepgrpo_fast.data.records import load_records
    from stepgrpo_fast.data.prompts import encode_prompts
    from stepgrpo_fast.trainer.rl.episodes import build_episodes
    from stepgrpo_fast.trainer.model.loading import load_model_and_processor, resolve_precision
    from stepgrpo_fast.trainer.model.objective import (
        PolicyObjective,
        build_policy_batch,
        completion_logprobs,
        frozen_linears_to,
        train_only,
    )
    from stepgrpo_fast.trainer.rl.rollout import (
        eos_token_ids,
        generate_rollouts,
        vision_placeholder_ids,
    )

    torch.manual_seed(0)
    if args.threads:
        torch.set_num_threads(args.threads)
    load_avg_start = os.getloadavg()
    precision = resolve_precision(args.dtype, "cpu")
    t0 = time.perf_counter()
    policy, processor = load_model_and_processor(
        args.ckpt, torch_dtype=str(precision.weight_dtype).removeprefix("torch.")
    )
    n_params = sum(p.numel() for p in policy.parameters())
    n_layers = policy.config.text_config.num_hidden_layers
    train_only(policy, args.train)
    trainable = [p for p in policy.parameters() if p.requires_grad]
    n_trainable = sum(p.numel() for p in trainable)
    frozen_saved = 0
    if precision.mixed and not args.frozen_fp32:  # as the trainer's load_policy does
        frozen_saved = frozen_linears_to(policy, precision.compute_dtype)
    ref, _ = load_model_and_processor(
        args.ckpt, torch_dtype=str(precision.compute_dtype).removeprefix("torch.")
    )
    ref.requires_grad_(False).eval()
    policy.train()
    optimizer = torch.optim.AdamW(trainable, lr=1e-6)
    load_seconds, rss_loaded = time.perf_counter() - t0, _rss("VmRSS")

    data = write_dataset(pathlib.Path(args.data_dir), seed=0, n_sft=2, n_rl=2, n_eval=2)
    records = load_records(data["rl"], require_response=False)[:1]
    prompts = encode_prompts(processor, records)
    M, T, C = args.num_generations, args.temperature, args.new_tokens
    tokenizer = processor.tokenizer
    phases = Phases()

    def rollout():
        with torch.no_grad(), precision.autocast():
            return generate_rollouts(
                policy, tokenizer, prompts, num_generations=M, max_new_tokens=C, temperature=T,
                row_seeds=list(range(M)), vision_start_token_id=policy.config.vision_start_token_id,
                suppress_token_ids=[*vision_placeholder_ids(policy), *eos_token_ids(policy, tokenizer)],
            )  # fmt: skip

    out = phases.run("rollout", rollout)
    assert out.completion_ids.shape == (M, C), out.completion_ids.shape

    def rewards():
        episodes = build_episodes(out.texts, records, num_generations=M)
        adv = episodes.advantages.float()
        if not bool(adv.abs().sum() > 0):
            adv = torch.tensor([1.0 if i % 2 == 0 else -1.0 for i in range(M)])
        return adv

    advantages = phases.run("rewards", rewards)
    batch = build_policy_batch(
        out.prompt_inputs, out.completion_ids, out.completion_mask, advantages
    )

    def reference():
        with torch.no_grad(), precision.autocast():
            if args.head == "fused":
                return completion_logprobs(ref, batch, temperature=T)
            return plain_logprobs(ref, batch, T)

    batch.ref_logp = phases.run("reference", reference)
    objective = PolicyObjective(policy, beta=args.beta, temperature=T, precision=precision,
                                max_completion_length=C)  # fmt: skip

    def update():
        if args.head == "fused":
            loss, metrics = objective(batch)
        else:
            with precision.autocast():
                logp = plain_logprobs(policy, batch, T)
            loss, metrics = sg.grpo_loss(logp, batch.advantages, batch.completion_mask,
                                         ref_logp=batch.ref_logp, beta=args.beta,
                                         max_completion_length=C)  # fmt: skip
        loss.backward()
        norm = torch.nn.utils.clip_grad_norm_(trainable, 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return float(loss.detach()), float(metrics["kl"].detach()), float(norm)

    loss, kl, grad_norm = phases.run("update", update)
    ref_bytes = torch.finfo(precision.compute_dtype).bits // 8
    return {
        "head": args.head,
        "precision": repr(precision),
        "threads": torch.get_num_threads(),
        "cpu": platform.processor() or platform.machine(),
        "load_avg_start": load_avg_start,
        "load_avg_end": os.getloadavg(),
        "decoder_layers": n_layers,
        "parameters": n_params,
        "trainable_parameters": n_trainable,
        "frozen_linears_saved_gb": frozen_saved / GB,
        "train_only": args.train,
        "prompt_tokens": out.prompt_length,
        "completion_tokens": [int(x) for x in out.completion_lengths],
        "load_seconds": load_seconds,
        "rss_after_load_gb": rss_loaded,
        "phases": phases.rows,
        "step_seconds": sum(r["seconds"] for r in phases.rows),
        "peak_rss_gb": max(r["peak_rss_gb"] for r in phases.rows),
        "loss": loss,
        "kl": kl,
        "grad_norm": grad_norm,
        "full_finetune_gb": full_finetune_gb(n_params, ref_bytes),
    }


def print_table(r: dict) -> None:
    print(f"head={r['head']}  {r['precision']}  threads={r['threads']}  layers={r['decoder_layers']}  "
          f"params={r['parameters'] / 1e9:.3f}B  trained={r['trainable_parameters'] / 1e6:.1f}M "
          f"({', '.join(r['train_only'])}); frozen linears in the compute dtype save "
          f"{r['frozen_linears_saved_gb']:.2f} GB")  # fmt: skip
    print(f"prompt {r['prompt_tokens']} tokens, completions {r['completion_tokens']}; load "
          f"{r['load_seconds']:.0f} s, RSS after load {r['rss_after_load_gb']:.2f} GB; load avg "
          f"{r['load_avg_start'][0]:.2f} -> {r['load_avg_end'][0]:.2f}")  # fmt: skip
    print(f"{'phase':<10} {'seconds':>8} {'peak RSS GB':>12} {'RSS after GB':>13}")
    for row in r["phases"]:
        print(f"{row['phase']:<10} {row['seconds']:>8.2f} {row['peak_rss_gb']:>12.2f} "
              f"{row['rss_after_gb']:>13.2f}")  # fmt: skip
    print(f"{'step':<10} {r['step_seconds']:>8.2f} {r['peak_rss_gb']:>12.2f}")
    print(f"loss {r['loss']:.6f}  kl {r['kl']:.2e}  grad norm {r['grad_norm']:.4f}")
    ft = r["full_finetune_gb"]
    print("full fine-tuning would hold " + ", ".join(f"{k} {v:.1f} GB" for k, v in ft.items()))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--build", action="store_true", help="write the checkpoint and exit")
    p.add_argument("--ckpt", type=pathlib.Path, default=DEFAULT_DIR)
    p.add_argument("--num-layers", type=int, default=28, help="with --build")
    p.add_argument("--vision-depth", type=int, default=32, help="with --build")
    p.add_argument("--head", choices=("fused", "plain"), default="fused")
    p.add_argument("--dtype", choices=("bfloat16", "float32"), default="bfloat16")
    p.add_argument("--num-generations", type=int, default=4)
    p.add_argument("--new-tokens", type=int, default=64)
    p.add_argument("--temperature", type=float, default=1.0)
    p.add_argument("--beta", type=float, default=0.04)
    p.add_argument("--train", nargs="+", default=DEFAULT_TRAIN, help="train_only regexes")
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    p.add_argument("--frozen-fp32", action="store_true",
                   help="keep the frozen linear layers in fp32 (before policy.frozen_linears_to)")
    p.add_argument("--data-dir", default=str(DEFAULT_DIR) + "_data")
    p.add_argument("--json", default=None, help="also write the result here")
    args = p.parse_args(argv)
    if sys.platform != "linux":
        p.error("peak RSS per phase needs Linux /proc")
    for pattern in args.train:
        re.compile(pattern)
    if args.build:
        build(args.ckpt, args.num_layers, args.vision_depth)
        return 0
    if not (args.ckpt / "config.json").is_file():
        p.error(f"--ckpt {args.ckpt}: no checkpoint there; run with --build first")
    result = step(args)
    print_table(result)
    if args.json:
        pathlib.Path(args.json).write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
