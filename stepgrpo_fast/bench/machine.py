"""Where a benchmark ran and where its results go: versions, device and machine tags, CSV/JSON."""
from __future__ import annotations

import csv
import importlib.metadata
import json
import os
import platform
import re
from pathlib import Path

import torch

from .timing import is_cuda

VERSION_PACKAGES = {"torch": "torch", "triton": "triton", "transformers": "transformers",
                    "trl": "trl", "liger": "liger-kernel"}


def versions() -> dict[str, str]:
    """Installed versions of the packages the benchmarks compare ("" when not installed)."""
    out = {}
    for key, dist in VERSION_PACKAGES.items():
        try:
            out[key] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            out[key] = ""
    return out


def device_name(device: str | torch.device = "cpu") -> str:
    """'cuda:<GPU name>' or 'cpu:<processor>'."""
    if is_cuda(device):
        return f"cuda:{torch.cuda.get_device_name(torch.device(device))}"
    return f"cpu:{cpu_model() or platform.machine()}"


def cpu_model() -> str:
    """The CPU's model name (/proc/cpuinfo on Linux; platform.processor() elsewhere)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


def machine_slug(device: str | torch.device = "cpu") -> str:
    """A file-name-safe machine tag: 'cpu-2c-amd-epyc' or 'cuda-nvidia-h100-80gb-hbm3'."""
    if is_cuda(device):
        raw = f"cuda-{torch.cuda.get_device_name(torch.device(device))}"
    else:
        raw = f"cpu-{os.cpu_count() or 1}c-{cpu_model() or platform.machine()}"
    return re.sub(r"[^a-z0-9]+", "-", raw.lower()).strip("-")


def machine_info(device: str | torch.device = "cpu") -> dict:
    info = {
        "platform": platform.platform(),
        "processor": cpu_model() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "device": device_name(device),
        "versions": versions(),
    }
    try:
        info["load_average"] = [round(x, 2) for x in os.getloadavg()]
    except OSError:
        pass
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name()
    return info


def write_results(rows: list[dict], out_prefix: str | Path, *, columns: list[str] | None = None,
                  meta: dict | None = None) -> tuple[Path, Path]:
    """Write rows as ``<prefix>.csv`` and ``<prefix>.json`` (with machine info and ``meta``).

    CSV columns: ``columns`` first (when given), then every other key in first-seen order."""
    out_prefix = Path(out_prefix)
    out_prefix.parent.mkdir(parents=True, exist_ok=True)
    keys: list[str] = list(columns or [])
    for r in rows:
        keys += [k for k in r if k not in keys]
    csv_path = out_prefix.with_name(out_prefix.name + ".csv")
    json_path = out_prefix.with_name(out_prefix.name + ".json")
    with open(csv_path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=keys)
        w.writeheader()
        w.writerows(rows)
    payload = {"machine": machine_info(), **(meta or {}), "rows": rows}
    json_path.write_text(json.dumps(payload, indent=2, default=str))
    return csv_path, json_path
