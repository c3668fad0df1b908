"""`stepgrpo` without the optional extras: every subcommand either works or names what to
install, never a traceback. Optional packages are hidden in a child interpreter (None in
sys.modules makes their import fail as if they were not installed)."""
import subprocess
import sys

import pytest

from stepgrpo_fast import cli

HIDDEN = ("triton", "trl", "liger_kernel", "pytest", "pytest_benchmark", "datasets", "deepspeed",
          "wandb", "tensorboard", "peft")


def _run_without_extras(*argv: str) -> subprocess.CompletedProcess:
    code = ("import sys\n"
            f"for name in {HIDDEN!r}:\n"
            "    sys.modules[name] = None\n"
            "from stepgrpo_fast.cli import main\n"
            f"sys.exit(main({list(argv)!r}))\n")
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)


@pytest.mark.parametrize("command", sorted(cli.COMMANDS))
def test_every_subcommand_has_help_without_extras(command):
    done = _run_without_extras(command, "--help")
    assert done.returncode == 0, done.stderr[-2000:]
    assert "usage: stepgrpo" in done.stdout and "Traceback" not in done.stderr


def test_kernel_table_without_triton_says_what_to_install():
    done = _run_without_extras("kernel-table")
    assert done.returncode == cli.MISSING_EXIT, done.stderr[-2000:]
    assert "Traceback" not in done.stderr
    assert "triton is not installed; install it with: pip install 'stepgrpo_fast[triton]'" in done.stderr


def test_gpu_check_without_cuda_or_extras_exits_with_its_message():
    done = _run_without_extras("gpu-check")
    assert done.returncode == 2, done.stderr[-2000:]
    assert "no CUDA device is present" in done.stdout + done.stderr
    assert "Traceback" not in done.stderr


def test_missing_dependency_names_only_optional_packages():
    assert "pip install 'stepgrpo_fast[trl]'" in cli.missing_dependency(
        ModuleNotFoundError("No module named 'trl.trainer'", name="trl.trainer"))
    # a missing core module is a bug, not an extra: it keeps its traceback
    assert cli.missing_dependency(ModuleNotFoundError("x", name="transformers")) is None
    assert cli.missing_dependency(ModuleNotFoundError("x", name=None)) is None
