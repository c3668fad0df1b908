"""Launch plans: what one Triton kernel launch is, computed once and used twice.

Every launcher in this package builds a ``LaunchPlan`` per kernel launch (kernel, grid, runtime
arguments, constexprs, launch options) with a small plan function next to it, then runs it
with ``launch``. The AOT launch registry (stepgrpo_fast/gpu/launches.py) calls the SAME plan
functions, with stand-in tensors on the "meta" device and an explicit ``Target`` (an H100-sized
sm_80 / sm_90 GPU), so the binaries it compiles and checks for spills are the ones the real
launches make: argument order, dummy pointers, buffer views (their offsets), tiles, vocab
splits and flags all come from the plan function.

``Target`` is everything a plan reads about the machine; ``target_of(device)`` is the real one.
Torch only: imports without Triton.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch

from ..utils import triton_interpret
from .head_chunks import DEFAULT_BUDGET_BYTES, default_budget
from .tiles import num_sms


@dataclass(frozen=True)
class Target:
    """What a plan function reads about the machine it launches on.

    cuda:       the tensors live on a CUDA device (else the interpreter runs the kernels)
    interpret:  TRITON_INTERPRET is on (interpreter tiles, no autotuning)
    capability: CUDA compute capability (major, minor); (8, 0) off CUDA
    sms:        streaming multiprocessors (sizes vocab splits); 1 off CUDA
    allow_tf32: torch.backends.cuda.matmul.allow_tf32 (fp32 tl.dot precision of linear_logprobs)
    chunk_budget: bytes the [C, V] buffers of the gradient path may use (ops/head_chunks.py)
    """
    cuda: bool
    interpret: bool
    capability: tuple = (8, 0)
    sms: int = 1
    allow_tf32: bool = False
    chunk_budget: int = DEFAULT_BUDGET_BYTES["cpu"]

    @property
    def on_gpu(self) -> bool:
        """Compiled GPU kernels: GPU tiles, autotuners."""
        return self.cuda and not self.interpret


def target_of(device: torch.device) -> Target:
    """The Target of a real launch on ``device`` (reads the GPU, the interpreter switch and
    torch's TF32 switch now)."""
    cuda = device.type == "cuda"
    return Target(cuda=cuda, interpret=triton_interpret(),
                  capability=torch.cuda.get_device_capability(device) if cuda else (8, 0),
                  sms=num_sms(device), allow_tf32=bool(torch.backends.cuda.matmul.allow_tf32),
                  chunk_budget=default_budget(device))


def gpu_target(capability: tuple, sms: int, allow_tf32: bool = False) -> Target:
    """A compiled-GPU Target without a GPU (the AOT registry: e.g. (9, 0), 132 SMs)."""
    return Target(cuda=True, interpret=False, capability=tuple(capability), sms=int(sms),
                  allow_tf32=bool(allow_tf32),
                  chunk_budget=default_budget("cuda", capability=tuple(capability)))


@dataclass
class LaunchPlan:
    """One kernel launch: ``kernel[grid](*args, **constexprs, **options)``.

    kernel:     a @triton.jit function, or a triton.autotune Autotuner (then ``constexprs``
                holds the flags only; its configs supply the tiles and launch options)
    grid:       a tuple, or a callable of the config's meta-parameters (autotuner form)
    args:       runtime arguments in the kernel's parameter order (tensors, ints, floats)
    constexprs: tl.constexpr parameters by name
    options:    launch options (num_warps, num_stages)
    outputs:    buffers the launch writes that the launcher reads back (views of one
                allocation where the kernel takes views)
    """
    kernel: object
    grid: object
    args: tuple
    constexprs: dict
    options: dict = field(default_factory=dict)
    outputs: tuple = ()

    @property
    def autotuned(self) -> bool:
        return hasattr(self.kernel, "configs")

    @property
    def jit_function(self):
        """The @triton.jit function launched (the autotuner's own for an Autotuner)."""
        return self.kernel.fn if self.autotuned else self.kernel

    @property
    def name(self) -> tuple[str, str]:
        """(module, kernel name) of the Python function behind the kernel."""
        fn = self.jit_function.fn
        return fn.__module__, fn.__name__


def launch(plan: LaunchPlan) -> None:
    """Run ``plan`` (the one place the launchers start a kernel; tests record through it)."""
    plan.kernel[plan.grid](*plan.args, **plan.constexprs, **plan.options)
