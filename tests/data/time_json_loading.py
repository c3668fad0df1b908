"""Time load_records on JSON lists of N records (R1-VL / Mulberry-sized rows: a question, a
1.5 KB reference response, key steps, one image each among 1,000 PNG files, so every record's
image header is opened), side by side in one process, and the old textio line counting on the
same files for comparison. Not a test (not collected); run:

    python tests/data/time_json_loading.py 10000 50000 100000 [--check] [--old 2000 6000]

--check also times ``check_data`` (stepgrpo data check: every image decoded).
"""

from __future__ import annotations

import gc
import json
import pathlib
import subprocess
import sys
import tempfile
import time
import types

from PIL import Image

from stepgrpo_fast.data.checks import check_data
from stepgrpo_fast.data.records import load_records

RESPONSE = ("### Image Description:\nA triangle ABC with a median AD.\n### Rationales:\n"
            "The area halves twice.\n### Let's think step by step.\n"
            + "".join(f"### Step {k}:\nArea step {k}: 12 / 2 = 6, and 6 / 2 = 3.\n"
                      for k in range(1, 25))
            + "### The final answer is:\n3")


def write_list(folder: pathlib.Path, n: int, images: int = 1000) -> pathlib.Path:
    (folder / "img").mkdir(exist_ok=True)
    for k in range(images):
        path = folder / "img" / f"{k}.png"
        if not path.exists():
            Image.new("RGB", (64, 48), (k % 256, 80, 160)).save(path)
    rows = [{"image_path": f"img/{k % images}.png",
             "problem": f"In triangle ABC (case {k}), AD is a median. The area is 12. Area of ABE?",
             "solution": "3", "key_steps": {"Steps": ["12/2 = 6", ["6/2 = 3", "3"]]},
             "response": RESPONSE} for k in range(n)]
    path = folder / f"list_{n}.json"
    path.write_text(json.dumps(rows, indent=1))
    return path


def old_textio():
    """textio.py as it was before the streaming reader (line_of counted from the start)."""
    src = subprocess.run(["git", "show", "baf5701~1:stepgrpo_fast/textio.py"], check=True,
                         capture_output=True, text=True,
                         cwd=pathlib.Path(__file__).resolve().parents[2]).stdout
    module = types.ModuleType("old_textio")
    exec(compile(src, "old_textio.py", "exec"), module.__dict__)  # noqa: S102 (our own file)
    return module


def timed(fn) -> float:
    gc.collect()
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def main(argv: list[str]) -> None:
    cut = argv.index("--old") if "--old" in argv else len(argv)
    sizes = [int(a) for a in argv[:cut] if a.isdigit()]
    old_sizes = [int(a) for a in argv[argv.index("--old") + 1:]] if "--old" in argv else []
    with tempfile.TemporaryDirectory() as tmp:
        folder = pathlib.Path(tmp)
        results, checks = {}, {}
        for n in sizes:
            path = write_list(folder, n)
            seconds = timed(lambda: load_records(path, require_response=True))
            results[n] = seconds
            print(f"load_records {n:>7} records ({path.stat().st_size / 1e6:.0f} MB): "
                  f"{seconds:.2f} s  ({seconds / n * 1e6:.0f} us/record)", flush=True)
            if "--check" in argv:  # stepgrpo data check: every image decoded too
                checked = timed(lambda: check_data(path, require_response=True, progress=False))
                checks[n] = checked
                print(f"data check   {n:>7} records: {checked:.2f} s", flush=True)
        if len(sizes) > 1:
            base = sizes[0]
            for n in sizes[1:]:
                print(f"ratio {n}/{base}: {results[n] / results[base]:.2f} "
                      f"(size ratio {n / base:.0f})")
                if checks:
                    print(f"data check ratio {n}/{base}: {checks[n] / checks[base]:.2f}")
            per = results[sizes[-1]] / sizes[-1]
            print(f"260k records at {per * 1e6:.0f} us/record (the {sizes[-1]} point): "
                  f"{per * 260_000:.0f} s")
        if old_sizes:
            old = old_textio()
            for n in old_sizes:
                path = write_list(folder, n)
                new_s = timed(lambda: sum(1 for _ in __import__("stepgrpo_fast.textio", fromlist=[
                    "iter_json_records"]).iter_json_records(path)))
                old_s = timed(lambda: sum(1 for _ in old.iter_json_records(path)))
                print(f"JSON list parse {n:>7} records: old {old_s:.2f} s, new {new_s:.2f} s "
                      f"({old_s / new_s:.0f}x)", flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
