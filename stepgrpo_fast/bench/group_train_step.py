"""End-to-end StepGRPO training step on the tiny offline Qwen2-VL: our trainer vs TRL.

Providers (same checkpoint, same RL records with their images, same rewards StepRAR + StepRVR in
"paper" mode, beta 0.04 with a frozen reference model, loss_type "grpo", temperature 1.0,
B prompts x M generations per step, at most C new tokens, fp32, AdamW, one optimizer step per
rollout batch):
    ours            stepgrpo_fast.trainer.loop.run_stepgrpo (fused hidden-state GRPO loss)
    trl_ours_head   stepgrpo_fast.integrations.trl.StepGRPOTrainer (TRL's loop, our log-prob head)
    trl             trl.GRPOTrainer, TRL 1.16 as released (the baseline)
One step = rollouts + rewards + reference log-probs + loss + backward + optimizer step.

Time per step: each run trains 1 + ``steps`` steps; the first is a warm-up. Ours logs its own
step_time (metrics.jsonl); for TRL a TrainerCallback takes the wall time from on_step_begin to
on_step_end. Runs alternate between providers for ``rounds`` rounds (a shared machine).
tokens/s: generated completion tokens per second of step time (completions differ between
trainers: each samples with its own RNG, so lengths can differ; they are reported).
Peak memory: one more 1-step run per provider, from building the trainer to the end of the step,
under timing.peak_memory_bytes (includes the policy, the reference model and the optimizer
state; on a CPU only torch allocations are seen). On a CUDA machine both trainers use the GPU
(our loop through accelerate's default device, TRL with use_cpu=False), still in fp32.
All of it runs on one torch thread (OMP_NUM_THREADS=1 semantics): the tiny model is latency-bound.
"""
from __future__ import annotations

import contextlib
import json
import statistics
import tempfile
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch

from .timing import peak_memory_bytes, summarize
from .rows import make_row

PROVIDERS = ("ours", "trl_ours_head", "trl")
BASELINE = "trl"
TEMPERATURE = 1.0
BETA = 0.04
LEARNING_RATE = 1e-5


@dataclass(frozen=True)
class TrainSettings:
    prompts: int = 2           # B prompts per step
    generations: int = 4       # M completions per prompt
    max_new_tokens: int = 32   # C
    steps: int = 2             # timed steps per run (after one warm-up step)
    rounds: int = 2            # runs per provider, alternating
    memory: bool = True        # one extra 1-step run per provider under the profiler


@contextlib.contextmanager
def one_thread():
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


@contextlib.contextmanager
def _quiet_progress_bars():
    from transformers.utils import logging as hf_logging

    was_enabled = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if was_enabled:
            hf_logging.enable_progress_bar()


def build_assets(work: Path, s: TrainSettings) -> dict:
    """Tiny Qwen2-VL checkpoint + synthetic RL records (enough for every step of one run)."""
    from stepgrpo_fast.synthetic.task import write_dataset
    from stepgrpo_fast.synthetic.tiny_model import build_tiny_checkpoint

    ckpt = build_tiny_checkpoint(work / "tiny_qwen2_vl", family="qwen2_vl", seed=0)
    info = json.loads((ckpt / "tiny_model_info.json").read_text())
    paths = write_dataset(work / "data", seed=0, n_sft=0, n_eval=0,
                          n_rl=s.prompts * (s.steps + 1))
    return {"ckpt": ckpt, "rl": paths["rl"], "info": info}


# ----------------------------------------------------------------------------------- ours
def run_ours(assets: dict, s: TrainSettings, out: Path, steps: int) -> list[dict]:
    """Train ``steps`` steps with our loop; per-step {"step_time", "tokens"} from metrics.jsonl."""
    from stepgrpo_fast.trainer.config import StepGRPOConfig
    from stepgrpo_fast.trainer.loop import run_stepgrpo

    info = assets["info"]
    config = StepGRPOConfig(
        model_name_or_path=str(assets["ckpt"]), train_data=str(assets["rl"]),
        output_dir=str(out), num_generations=s.generations, max_new_tokens=s.max_new_tokens,
        per_device_batch_size=s.prompts, max_steps=steps, learning_rate=LEARNING_RATE,
        save_steps=0, save_total_limit=1, sample_log_steps=0, progress_bar=False, seed=0,
        beta=BETA, temperature=TEMPERATURE, loss_type="grpo", reward_mode="paper",
        min_pixels=info["min_pixels"], max_pixels=info["max_pixels"], dtype="float32",
    )
    run_stepgrpo(config)
    lines = (out / "metrics.jsonl").read_text().splitlines()
    rows = [json.loads(line) for line in lines if line.strip()]
    return [{"step_time": r["step_time"], "tokens": r["tokens_per_s"] * r["step_time"],
             "completion_length": r["completion_length"]} for r in rows]


# ------------------------------------------------------------------------------------ TRL
def trl_dataset(assets: dict):
    """The same records as TRL rows: conversational prompt (image part added by TRL before the
    text, as our prompts have it), the PIL image, solution and key_steps for the rewards."""
    from datasets import Dataset

    from stepgrpo_fast.data.records import load_image, load_records
    from stepgrpo_fast.data.prompts import user_text

    records = load_records(assets["rl"])
    return Dataset.from_list([
        {"prompt": [{"role": "user", "content": user_text(r)}], "image": load_image(r),
         "solution": r.solution, "key_steps": r.key_steps}
        for r in records
    ])


def run_trl(assets: dict, s: TrainSettings, out: Path, steps: int, ours_head: bool) -> list[dict]:
    """Train ``steps`` steps with TRL's GRPOTrainer (or StepGRPOTrainer); per-step stats."""
    from transformers import TrainerCallback
    from trl import GRPOConfig, GRPOTrainer

    from stepgrpo_fast.integrations.trl import StepGRPOTrainer, make_reward_funcs
    from stepgrpo_fast.trainer.model.loading import load_processor

    class StepTimer(TrainerCallback):
        def __init__(self):
            self.times, self._t0 = [], 0.0

        def on_step_begin(self, args, state, control, **kw):
            self._t0 = time.perf_counter()

        def on_step_end(self, args, state, control, **kw):
            self.times.append(time.perf_counter() - self._t0)

    timer = StepTimer()
    args = GRPOConfig(
        output_dir=str(out), per_device_train_batch_size=s.prompts * s.generations,
        num_generations=s.generations, max_completion_length=s.max_new_tokens, max_steps=steps,
        beta=BETA, learning_rate=LEARNING_RATE, temperature=TEMPERATURE, loss_type="grpo",
        report_to=[], logging_steps=1, use_cpu=not torch.cuda.is_available(), bf16=False, save_strategy="no", seed=0,
        disable_tqdm=True, dataloader_num_workers=0,
    )
    cls = StepGRPOTrainer if ours_head else GRPOTrainer
    trainer = cls(model=str(assets["ckpt"]), reward_funcs=make_reward_funcs("paper"), args=args,
                  train_dataset=trl_dataset(assets),
                  processing_class=load_processor(str(assets["ckpt"]), model_type="qwen2_vl"),
                  callbacks=[timer])
    from transformers import PrinterCallback

    trainer.remove_callback(PrinterCallback)  # TRL would print every log dict
    trainer.train()
    logs = [h for h in trainer.state.log_history if "completions/mean_length" in h]
    n = s.prompts * s.generations
    return [{"step_time": t, "tokens": h["completions/mean_length"] * n,
             "completion_length": h["completions/mean_length"]}
            for t, h in zip(timer.times, logs)]


def _runner(name: str):
    if name == "ours":
        return run_ours
    return lambda assets, s, out, steps: run_trl(assets, s, out, steps, name == "trl_ours_head")


# ---------------------------------------------------------------------------------- group
def run_group(s: TrainSettings, device: str = "cpu", log=print, work: Path | None = None) -> list[dict]:
    """Rows for the three trainers. Both trainers put the model on the accelerator when there is
    one, so ``device`` must be "cuda" on a CUDA machine and "cpu" elsewhere."""
    accel = "cuda" if torch.cuda.is_available() else "cpu"
    if torch.device(device).type != accel:
        raise ValueError(f"train_step: the trainers run on {accel} here; got device={device!r}")
    with contextlib.ExitStack() as stack:
        if work is None:
            work = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="bench_train_")))
        stack.enter_context(one_thread())
        stack.enter_context(_quiet_progress_bars())
        stack.enter_context(warnings.catch_warnings())
        warnings.simplefilter("ignore", FutureWarning)  # transformers 5 deprecation notices
        assets = build_assets(work, s)
        stats = {name: [] for name in PROVIDERS}
        failed: dict[str, str] = {}
        for rnd in range(s.rounds):
            for name in PROVIDERS:
                if name in failed:
                    continue
                try:
                    steps = _runner(name)(assets, s, work / f"{name}_{rnd}", s.steps + 1)
                except Exception as err:  # noqa: BLE001 - a peer failing must not hide the others
                    kind = "unavailable" if isinstance(err, ImportError) else "failed"
                    first = (str(err).strip().splitlines() or [""])[0][:200]
                    failed[name] = f"{kind}: {type(err).__name__}: {first}"
                    log(f"  train_step {name}: {failed[name]}")
                    continue
                if len(steps) != s.steps + 1:
                    raise RuntimeError(f"train_step {name}: expected {s.steps + 1} logged steps, "
                                       f"got {len(steps)}")
                stats[name] += steps[1:]   # drop the warm-up step
                log(f"  train_step {name:14s} round {rnd}: step times "
                    + ", ".join(f"{x['step_time']:.2f}" for x in steps) + " s")
        peaks = {}
        if s.memory:
            for name in PROVIDERS:
                if name not in failed:
                    peaks[name] = peak_memory_bytes(
                        lambda name=name: _runner(name)(assets, s, work / f"{name}_mem", 1),
                        device)
        info = assets["info"]
        shape = (f"tiny qwen2_vl H={info['hidden_size']} V={info['vocab_size']} "
                 f"prompts={s.prompts} generations={s.generations} "
                 f"max_new_tokens={s.max_new_tokens}")
        fields = {"group": "train_step", "op": "stepgrpo_step", "mode": "step", "B": s.prompts,
                  "T": s.max_new_tokens, "H": info["hidden_size"], "V": info["vocab_size"],
                  "N": s.prompts * s.generations, "dtype": "float32", "shape": shape}
        rows = []
        for name in PROVIDERS:
            if name in failed:
                rows.append(make_row(**fields, provider=name, status=failed[name]))
                continue
            times = [x["step_time"] for x in stats[name]]
            t = summarize(times)
            tokens_per_s = sum(x["tokens"] for x in stats[name]) / sum(times)
            mean_len = statistics.mean(x["completion_length"] for x in stats[name])
            rows.append(make_row(**fields, provider=name, status="ok", threads=1,
                                 repeats=t["repeats"], p20_s=t["p20_s"], p50_s=t["p50_s"],
                                 p80_s=t["p80_s"], peak_bytes=int(peaks[name]) if name in peaks else "",
                                 items_per_s=tokens_per_s, items="generated tokens",
                                 note=f"mean completion length {mean_len:.1f} tokens"))
            log(f"  train_step {name:14s} p50 {t['p50_s']:.3f} s/step  {tokens_per_s:8.1f} tok/s"
                + (f"  peak {peaks[name] / 2**20:.1f} MB" if name in peaks else ""))
        return rows


# ------------------------------------------------------------------------- shared prompt
@dataclass(frozen=True)
class SharedPromptSettings:
    """share_prompt true vs false on a real-width Qwen2-VL-2B shape (2 decoder layers, 2 vision
    blocks, vocab 151,936, fp32), one prompt with one image of ``image_tokens`` tokens, G
    completions of at most ``max_new_tokens``; every parameter but the (tied) embedding trains."""

    image_tokens: tuple[int, ...] = (256, 512)
    generations: tuple[int, ...] = (4, 8)
    max_new_tokens: int = 8
    steps: int = 2               # the last one is timed (the first warms up)
    memory: bool = False         # one more 1-step run per case under the profiler


SHARED_TRAIN_ONLY = [r"language_model\.layers\.", r"language_model\.norm\.", r"visual\."]


def build_shared_assets(work: Path, image_tokens: int) -> dict:
    """The real-shaped checkpoint (its pixel budget = one 448 x (448 * k) image, k = tokens/256)
    and a one-record RL file with that image."""
    from PIL import Image

    from stepgrpo_fast.synthetic.real_shapes import build_real_shaped_checkpoint

    if image_tokens % 256:
        raise ValueError(f"image_tokens must be a multiple of 256, got {image_tokens}")
    width, height = 448 * (image_tokens // 256), 448  # 14-px patches, 2 x 2 merged
    ckpt = build_real_shaped_checkpoint(
        work / f"qwen2_vl_real_{image_tokens}", "qwen2_vl", num_layers=2, vision_depth=2,
        min_pixels=width * height, max_pixels=width * height,
    )
    data = work / f"rl_{image_tokens}"
    data.mkdir(exist_ok=True)
    gen = torch.Generator().manual_seed(image_tokens)
    pixels = torch.randint(0, 256, (height, width, 3), generator=gen, dtype=torch.uint8)
    Image.fromarray(pixels.numpy()).save(data / "image.png")
    record = {"image": "image.png", "question": "What is the sum of the two numbers in the "
              "image? The numbers are 1 and 5.", "solution": "6", "key_steps": [["1 + 5 = 6"]]}
    (data / "rl.jsonl").write_text(json.dumps(record) + "\n")
    return {"ckpt": ckpt, "rl": data / "rl.jsonl", "pixels": width * height}


def run_shared_case(assets: dict, generations: int, share: bool, out: Path, steps: int,
                    max_new_tokens: int) -> dict:
    """One run; the last step's metrics.jsonl row (step_time and the time_* phases)."""
    from stepgrpo_fast.trainer.config import StepGRPOConfig
    from stepgrpo_fast.trainer.loop import run_stepgrpo

    config = StepGRPOConfig(
        model_name_or_path=str(assets["ckpt"]), train_data=str(assets["rl"]),
        output_dir=str(out), num_generations=generations, max_new_tokens=max_new_tokens,
        per_device_batch_size=1, max_steps=steps, learning_rate=LEARNING_RATE, save_steps=0,
        save_total_limit=1, sample_log_steps=0, progress_bar=False, seed=0, beta=BETA,
        temperature=TEMPERATURE, loss_type="grpo", reward_mode="paper", dtype="float32",
        attn_implementation="sdpa", min_pixels=assets["pixels"], max_pixels=assets["pixels"],
        train_only=SHARED_TRAIN_ONLY, share_prompt=share,
    )
    run_stepgrpo(config)
    rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines() if x.strip()]
    return rows[-1]


SHARED_TIMES = ("step_time", "time_rollout", "time_reference", "time_update")


def run_shared_prompt(s: SharedPromptSettings, log=print, work: Path | None = None) -> list[dict]:
    """Rows: per (image tokens, G) the shared and the repeated layout side by side, in one
    process, alternating; the shared row's note gives the ratios shared / repeated."""
    rows = []
    with contextlib.ExitStack() as stack:
        if work is None:
            work = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="bench_share_")))
        stack.enter_context(_quiet_progress_bars())
        stack.enter_context(warnings.catch_warnings())
        warnings.simplefilter("ignore")
        for tokens in s.image_tokens:
            assets = build_shared_assets(work, tokens)
            for g in s.generations:
                got = {}
                for share in (False, True):
                    out = work / f"run_{tokens}_{g}_{share}"
                    got[share] = run_shared_case(assets, g, share, out, s.steps, s.max_new_tokens)
                    if s.memory:
                        got[share]["peak_bytes"] = peak_memory_bytes(
                            lambda share=share, out=out: run_shared_case(
                                assets, g, share, out.with_name(out.name + "_mem"), 1,
                                s.max_new_tokens))
                    log(f"  shared_prompt {tokens} image tokens G={g} share={share}: "
                        + " ".join(f"{k} {got[share][k]:.2f}" for k in SHARED_TIMES))
                ratios = {k: got[True][k] / got[False][k] for k in SHARED_TIMES}
                ratios["reference+update"] = (
                    (got[True]["time_reference"] + got[True]["time_update"])
                    / (got[False]["time_reference"] + got[False]["time_update"]))
                log("  shared / repeated: " + " ".join(f"{k} {v:.3f}" for k, v in ratios.items()))
                for share in (True, False):
                    r = got[share]
                    rows.append(make_row(
                        group="train_step", op="stepgrpo_step_shared_prompt", mode="step",
                        provider="shared" if share else "repeated", status="ok", B=1,
                        T=s.max_new_tokens, H=1536, V=151936, N=g, dtype="float32",
                        shape=f"real-width qwen2_vl 2+2 layers, {tokens} image tokens, G={g}",
                        repeats=1, p50_s=r["step_time"], peak_bytes=r.get("peak_bytes", ""),
                        note=" ".join(f"{k}={r[k]:.2f}s" for k in SHARED_TIMES[1:])
                        + (" ratios " + " ".join(f"{k}={v:.3f}" for k, v in ratios.items())
                           if share else "")))
    return rows


if __name__ == "__main__":  # python -m stepgrpo_fast.bench.group_train_step [tokens] [G,...] [--memory]
    import sys

    memory = "--memory" in sys.argv[1:]
    args = [tuple(int(x) for x in a.split(",")) for a in sys.argv[1:] if a != "--memory"][:2]
    settings = SharedPromptSettings(*args, memory=memory)
    print(json.dumps(run_shared_prompt(settings), indent=1))
