"""Environment for trainer runs in child processes (resume and DDP tests): one torch thread,
offline hub, and this folder plus the repository root on PYTHONPATH; and what two runs of the
same steps share bit for bit (``run_metrics``)."""
import json
import os
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]


# wall-clock figures differ from run to run: step_time, tokens_per_s and every per-phase time_*
TIME_KEYS = {"step_time", "tokens_per_s"}


def untimed(row: dict) -> dict:
    """A metrics row without its wall-clock figures."""
    return {k: v for k, v in row.items() if k not in TIME_KEYS and not k.startswith("time_")}


def run_metrics(out) -> list[dict]:
    """The rows of run dir ``out``'s metrics.jsonl, untimed: a killed-and-resumed run's must
    equal an uninterrupted one's."""
    return [untimed(json.loads(line))
            for line in (Path(out) / "metrics.jsonl").read_text().splitlines()]


def subprocess_env() -> dict:
    env = dict(os.environ)
    env.update(
        OMP_NUM_THREADS="1",
        MKL_NUM_THREADS="1",
        HF_HUB_OFFLINE="1",
        TRANSFORMERS_OFFLINE="1",
        TOKENIZERS_PARALLELISM="false",
        PYTHONPATH=os.pathsep.join([str(HERE), str(ROOT), env.get("PYTHONPATH", "")]),
    )
    return env


ACCELERATE_CONFIG = ROOT / "stepgrpo_fast" / "configs" / "accelerate" / "cpu_2proc.yaml"


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def train_commands(config, one, two) -> tuple[list[str], list[str]]:
    """(one process, 4 prompts per step; accelerate launch of 2 gloo processes, 2 prompts each):
    `stepgrpo train --config CONFIG` into output dirs ``one`` and ``two``, same global batch."""
    import sys

    train = ["-m", "stepgrpo_fast.trainer.cli", "train", "--config", str(config)]
    single = [sys.executable, *train, "--set", f"output_dir={one}", "--set", "per_device_batch_size=4"]
    double = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(ACCELERATE_CONFIG),
              "--main_process_port", str(free_port()), *train,
              "--set", f"output_dir={two}", "--set", "per_device_batch_size=2"]
    return single, double


def kill_at_checkpoint(command: list[str], out_dir: Path, step: int, timeout_s: float = 240) -> None:
    """Start ``command`` (a training run writing to ``out_dir``), SIGKILL it as soon as
    ``out_dir/checkpoint-{step}`` is in place, and check that it died there without a final model."""
    import contextlib
    import signal
    import subprocess
    import time

    proc = subprocess.Popen(command, env=subprocess_env(), cwd=ROOT, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    deadline = time.time() + timeout_s
    while not (out_dir / f"checkpoint-{step}").is_dir():
        if proc.poll() is not None:
            raise AssertionError(f"run ended before the kill: {proc.stderr.read()[-3000:]}")
        assert time.time() < deadline, f"no checkpoint-{step} appeared in {timeout_s} s"
        time.sleep(0.005)
    # the whole tree at once, as a lost machine: accelerate launch's workers run in their own
    # sessions and would go on training if only the launcher died
    tree = [proc.pid, *_descendants(proc.pid)]
    for pid in tree:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    proc.wait(timeout=30)
    gone_by = time.time() + 30
    while any(_alive(pid) for pid in tree):  # reparented workers: gone before the caller resumes
        assert time.time() < gone_by, "a killed worker is still alive"
        time.sleep(0.01)
    proc.stderr.close()
    assert proc.returncode == -signal.SIGKILL
    assert not (out_dir / "final_model").exists()


def _descendants(pid: int) -> list[int]:
    """Every live descendant of ``pid`` (Linux /proc), children before grandchildren."""
    found, frontier = [], [pid]
    while frontier:
        parent = frontier.pop(0)
        for task in Path(f"/proc/{parent}/task").glob("*"):
            try:
                children = [int(c) for c in (task / "children").read_text().split()]
            except OSError:
                continue
            found += children
            frontier += children
    return found


def _alive(pid: int) -> bool:
    """``pid`` exists and is not a zombie."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False
