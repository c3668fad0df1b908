"""`stepgrpo data check`: every image decoded and held against the processor's limits, one
line per bad record, exit 2 when any is bad; --json for scripts."""

import io
import json

import pytest
from PIL import Image

from layout_files import sample_items, write_easyr1_parquet
from stepgrpo_fast.cli import main


@pytest.fixture(autouse=True)
def _datasets_cache(tmp_path, monkeypatch):
    import datasets

    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "hf_cache")


def _bad_jsonl(tmp_path):
    (tmp_path / "img").mkdir()
    rows = []
    for k in range(5):
        Image.new("RGB", (40, 30), (k * 40, 0, 0)).save(tmp_path / "img" / f"{k}.png")
        rows.append({"image": f"img/{k}.png", "question": f"{k} + 1?", "solution": str(k + 1),
                     "key_steps": [[f"{k} + 1"]]})
    noise = io.BytesIO()
    Image.effect_noise((120, 120), 60).convert("RGB").save(noise, format="JPEG")
    (tmp_path / "img" / "cut.jpg").write_bytes(noise.getvalue()[: len(noise.getvalue()) // 2])
    Image.new("RGB", (6000, 20), (9, 9, 9)).save(tmp_path / "img" / "strip.png")
    rows[1]["image"] = "img/cut.jpg"
    rows[3]["image"] = "img/strip.png"
    del rows[4]["key_steps"]
    path = tmp_path / "bad.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_names_a_truncated_jpeg_and_a_6000x20_strip_and_exits_2(tmp_path, capsys):
    path = _bad_jsonl(tmp_path)
    assert main(["data", "check", "--data", str(path)]) == 2
    out = capsys.readouterr().out.splitlines()
    assert "records:         5 (3 good, 2 bad)" in out
    assert out[-2].startswith(f"{path}:2: field 'image': cannot decode image ")
    assert "truncated" in out[-2]
    assert out[-1] == (f"{path}:4: field 'image': image 6000x20 has aspect ratio 300 > 200 "
                       "(the Qwen2-VL processor refuses it)")
    assert main(["data", "check", "--data", str(path), "--json"]) == 2
    summary = json.loads(capsys.readouterr().out)
    assert (summary["records"], summary["bad"], summary["with_key_steps"]) == (5, 2, 2)
    assert summary["layout"] == "ours" and summary["images_per_record"] == {"1": 3}


def test_good_parquet_exits_0_and_counts_images(tmp_path, capsys):
    path = write_easyr1_parquet(tmp_path / "t.parquet", sample_items(5))
    assert main(["data", "check", "--data", str(path), "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["records"] == 5 and summary["bad"] == 0 and summary["layout"] == "easyr1"
    assert summary["images_per_record"] == {"1": 3, "2": 2} and summary["with_key_steps"] == 0


def test_unreadable_source_and_column_map(tmp_path, capsys):
    assert main(["data", "check", "--data", str(tmp_path / "none.json")]) == 2
    assert "does not exist" in capsys.readouterr().err
    path = tmp_path / "c.jsonl"
    path.write_text(json.dumps({"query": "1 + 1?", "gt": "2"}) + "\n")
    assert main(["data", "check", "--data", str(path), "--json"]) == 2
    assert main(["data", "check", "--data", str(path), "--json",
                 "--column-map", "question=query", "solution=gt"]) == 0
    assert json.loads(capsys.readouterr().out.splitlines()[-1])["images_per_record"] == {"0": 1}
