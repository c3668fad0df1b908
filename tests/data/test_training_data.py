"""Real data at training time: the start checks refuse bad records (naming them) before any model
loads, skip_bad_records trains on the rest, an image that fails to decode mid-run is replaced
(skipped_records), missing key steps are warned about, and StepGRPO + eval run on an EasyR1
parquet with one or two images per record in RGB / RGBA / L / P."""

import io
import json

import pytest
import torch
from PIL import Image

from layout_files import sample_items, write_easyr1_parquet
from stepgrpo_fast.data.checks import replace_unreadable, warn_missing_key_steps
from stepgrpo_fast.data.records import load_records
from stepgrpo_fast.trainer.config import StepGRPOConfig
from stepgrpo_fast.trainer.loop import run_stepgrpo

NO_MODEL = "/nonexistent/model/dir"


@pytest.fixture(autouse=True)
def _datasets_cache(tmp_path, monkeypatch):
    import datasets

    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "hf_cache")


@pytest.fixture(autouse=True)
def _one_thread():
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def _rows(synthetic_data, n):
    rows = [json.loads(line) for line in synthetic_data["rl"].read_text().splitlines()[:n]]
    for row in rows:
        row["image"] = str(synthetic_data["dir"] / row["image"])
    return rows


def _truncated_jpeg(path):
    out = io.BytesIO()
    Image.effect_noise((64, 64), 60).convert("RGB").save(out, format="JPEG")
    path.write_bytes(out.getvalue()[: len(out.getvalue()) // 2])
    return path


def test_bad_rows_refused_before_the_model_then_skipped(tmp_path, synthetic_data,
                                                        tiny_rl_config):
    rows = _rows(synthetic_data, 6)
    Image.new("RGB", (6000, 20)).save(tmp_path / "strip.png")
    rows[2]["image"] = str(tmp_path / "strip.png")
    del rows[4]["question"]
    data = tmp_path / "train.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    config = StepGRPOConfig(model_name_or_path=NO_MODEL, train_data=str(data),
                            output_dir=str(tmp_path / "refused"), progress_bar=False)
    with pytest.raises(ValueError, match=r"2 invalid record\(s\)") as info:
        run_stepgrpo(config)
    assert f"{data}:3: field 'image': image 6000x20 has aspect ratio 300" in str(info.value)
    assert f"{data}:5: field 'question'" in str(info.value)
    assert not (tmp_path / "refused").exists()  # refused before anything started
    with pytest.warns(UserWarning, match=r"skip_bad_records: skipped 2 of 6 records"):
        summary = run_stepgrpo(tiny_rl_config(tmp_path / "out", train_data=str(data),
                                              skip_bad_records=True))
    assert summary["steps"] == 1 and summary["metrics"]["skipped_records"] == 0.0


def test_image_failing_mid_run_is_replaced(tmp_path, synthetic_data, tiny_rl_config):
    rows = _rows(synthetic_data, 3)
    for k in (0, 1):  # headers fine (the start checks pass), the pixel data cut short
        rows[k]["image"] = str(_truncated_jpeg(tmp_path / f"cut{k}.jpg"))
    data = tmp_path / "train.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    with pytest.warns(UserWarning, match=r"skipped record .*cut\d.jpg.*truncated"):
        summary = run_stepgrpo(tiny_rl_config(tmp_path / "out", train_data=str(data)))
    assert summary["metrics"]["skipped_records"] >= 1.0

    records = load_records(data)
    known_bad: set[int] = set()
    with pytest.warns(UserWarning, match="cut0.jpg"):
        batch, replaced = replace_unreadable([records[0], records[2]], records, known_bad)
    assert [r.index for r in batch] == [2, 2] and replaced == 1 and known_bad == {0, 1}
    assert replace_unreadable([records[2]], records, known_bad) == ([records[2]], 0)


def test_missing_key_steps_warned_with_the_count(synthetic_data):
    records = load_records(synthetic_data["rl"])
    assert warn_missing_key_steps(records, "x") == 0
    records[1].key_steps, records[3].key_steps = [], []
    with pytest.warns(UserWarning, match=f"2 of {len(records)} records of x have no key_steps"):
        assert warn_missing_key_steps(records, "x") == 2


def test_stepgrpo_and_eval_on_an_easyr1_parquet(tmp_path, tiny_rl_config):
    items = sample_items(4, images_per_item=(1, 2))  # RGB / RGBA / L / P, one or two each
    data = write_easyr1_parquet(tmp_path / "geo.parquet", items)
    with pytest.warns(UserWarning, match="4 of 4 records .* have no key_steps"):
        summary = run_stepgrpo(tiny_rl_config(
            tmp_path / "out", train_data=str(data), max_steps=2, eval_data=str(data),
            eval_at_end=True, eval_max_new_tokens=4, eval_batch_size=2))
    assert summary["steps"] == 2 and summary["eval"]["num_examples"] == 4.0
    lines = (tmp_path / "out" / "eval_predictions.jsonl").read_text().splitlines()
    assert [json.loads(line)["source"] for line in lines] == [f"{data}:row {k}" for k in range(4)]


def test_sft_on_sharegpt_with_several_and_no_images(tmp_path, tiny_ckpt):
    from layout_files import write_sharegpt_json
    from stepgrpo_fast.trainer.config import SFTConfig
    from stepgrpo_fast.trainer.loop import run_sft

    items = sample_items(4, images_per_item=(2, 0, 1))  # two, none, one, two images
    data = write_sharegpt_json(tmp_path / "mulberry.json", items)
    summary = run_sft(SFTConfig(model_name_or_path=str(tiny_ckpt), train_data=str(data),
                                output_dir=str(tmp_path / "out"), per_device_batch_size=4,
                                max_steps=1, save_steps=0, progress_bar=False))
    metrics = summary["metrics"]
    assert summary["steps"] == 1 and metrics["loss"] > 0 and metrics["skipped_records"] == 0.0
