"""Data files written in the layouts users bring (STEPGRPO_SPEC.md section 5), for the tests.

Each writer takes a list of dicts {"images": [PIL images], "question", "solution", "key_steps",
"response"} and writes them in one layout, the way that layout's own tools would.
"""

from __future__ import annotations

import io
import json
import pathlib

from PIL import Image

MODES = ("RGB", "RGBA", "L", "P")


def png_bytes(img: Image.Image) -> bytes:
    out = io.BytesIO()
    img.save(out, format="PNG")
    return out.getvalue()


def sample_image(i: int, mode: str = "RGB", size=(56, 42)) -> Image.Image:
    img = Image.new("RGB", size, ((40 * i) % 256, 120, 200))
    if mode == "RGBA":
        img = img.convert("RGBA")
        img.putalpha(128)
    elif mode == "P":
        img = img.convert("P", palette=Image.Palette.ADAPTIVE, colors=16)
    elif mode != "RGB":
        img = img.convert(mode)
    return img


def sample_items(n: int, *, images_per_item=(1, 2)) -> list[dict]:
    """n items, the k-th with images_per_item[k % len] images cycling through RGB/RGBA/L/P."""
    items = []
    for k in range(n):
        count = images_per_item[k % len(images_per_item)]
        items.append({
            "images": [sample_image(k + j, MODES[(k + j) % len(MODES)]) for j in range(count)],
            "question": f"What is {k} + 1?",
            "solution": str(k + 1),
            "key_steps": [[f"{k} + 1 = {k + 1}"]],
            "response": f"### Step 1:\n{k} + 1 = {k + 1}\n### The final answer is:\n{k + 1}",
        })
    return items


def easyr1_dataset(items: list[dict]):
    """The EasyR1 / geometry3k layout: images [HF Image], problem with one <image> each, answer."""
    from datasets import Dataset, Features, Image as HFImage, Sequence, Value

    features = Features({"images": Sequence(HFImage()), "problem": Value("string"),
                         "answer": Value("string")})
    return Dataset.from_dict({
        "images": [[{"bytes": png_bytes(i), "path": None} for i in it["images"]] for it in items],
        "problem": ["<image>" * len(it["images"]) + it["question"] for it in items],
        "answer": [it["solution"] for it in items],
    }, features=features)


def write_easyr1_parquet(path: pathlib.Path, items: list[dict]) -> pathlib.Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    easyr1_dataset(items).to_parquet(str(path))
    return path


def write_easyr1_disk(folder: pathlib.Path, items: list[dict]) -> pathlib.Path:
    easyr1_dataset(items).save_to_disk(str(folder))
    return folder


def _save_files(folder: pathlib.Path, items: list[dict]) -> list[list[str]]:
    (folder / "imgs").mkdir(parents=True, exist_ok=True)
    names = []
    for k, it in enumerate(items):
        row = []
        for j, img in enumerate(it["images"]):
            name = f"imgs/{k}_{j}.png"
            img.save(folder / name)
            row.append(name)
        names.append(row)
    return names


def write_r1vl_json(path: pathlib.Path, items: list[dict]) -> pathlib.Path:
    """R1-VL's released layout: a JSON list of {image_path, problem, solution (<answer> tags),
    key_steps {"Steps": [...]}} (one image each)."""
    names = _save_files(path.parent, items)
    rows = [{"image_path": n[0], "problem": it["question"],
             "solution": f"<answer> {it['solution']} </answer>",
             "key_steps": {"Steps": it["key_steps"]}} for n, it in zip(names, items)]
    path.write_text(json.dumps(rows, indent=2))
    return path


def write_custom_jsonl(path: pathlib.Path, items: list[dict]) -> pathlib.Path:
    """Columns no layout knows: query, gt, img, steps."""
    names = _save_files(path.parent, items)
    path.write_text("".join(json.dumps({"query": it["question"], "gt": it["solution"],
                                        "img": n[0], "steps": it["key_steps"]}) + "\n"
                            for n, it in zip(names, items)))
    return path


def write_sharegpt_json(path: pathlib.Path, items: list[dict]) -> pathlib.Path:
    """Mulberry / LLaMA-Factory sharegpt: messages with <image> placeholders, images paths."""
    names = _save_files(path.parent, items)
    rows = [{"messages": [{"role": "user", "content": "<image>" * len(n) + it["question"]},
                          {"role": "assistant", "content": it["response"]}],
             "images": n} for n, it in zip(names, items)]
    path.write_text(json.dumps(rows))
    return path


def write_trl_jsonl(path: pathlib.Path, items: list[dict]) -> pathlib.Path:
    """TRL: prompt as a conversation with image parts, images, solution."""
    names = _save_files(path.parent, items)
    rows = [{"prompt": [{"role": "user", "content": [{"type": "image"}] * len(n)
                         + [{"type": "text", "text": it["question"]}]}],
             "images": n, "solution": it["solution"]} for n, it in zip(names, items)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def write_mathvista_json(path: pathlib.Path, items: list[dict]) -> pathlib.Path:
    """MathVista testmini: pid, question, image (a path), choices, answer, ..."""
    names = _save_files(path.parent, items)
    rows = [{"pid": str(k), "question": it["question"], "image": n[0],
             "choices": [it["solution"], "7"] if k % 2 else None, "answer": it["solution"],
             "answer_type": "text", "question_type": "multi_choice" if k % 2 else "free_form",
             "precision": None, "unit": None}
            for k, (n, it) in enumerate(zip(names, items))]
    path.write_text(json.dumps(rows))
    return path
