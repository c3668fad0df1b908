"""Sources (JSON / JSONL streamed, Parquet file or folder, save_to_disk, hub id) and layouts (ours,
R1-VL, EasyR1, sharegpt, TRL, MathVista, custom columns through column_map), each read from a
file written in that layout."""

import json

import pytest

from layout_files import (
    sample_items,
    write_custom_jsonl,
    write_easyr1_disk,
    write_easyr1_parquet,
    write_mathvista_json,
    write_r1vl_json,
    write_sharegpt_json,
    write_trl_jsonl,
)
from stepgrpo_fast.data.layouts import detect_layout, parse_column_map
from stepgrpo_fast.data.records import load_records, read_records
from stepgrpo_fast.data.sources import ArrowImage

CUSTOM = ["question=query", "solution=gt", "image=img", "key_steps=steps"]


@pytest.fixture(autouse=True)
def _datasets_cache(tmp_path, monkeypatch):
    import datasets

    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "hf_cache")


def test_easyr1_parquet_multi_image_lazy(tmp_path):
    items = sample_items(5)  # 1, 2, 1, 2, 1 images
    path = write_easyr1_parquet(tmp_path / "train.parquet", items)
    report = read_records(path)
    assert report.layout == "easyr1" and report.bad == [] and len(report.records) == 5
    records = report.records
    assert [len(r.images) for r in records] == [1, 2, 1, 2, 1]
    assert all(isinstance(i, ArrowImage) for r in records for i in r.images)  # not decoded yet
    assert records[1].question == "<image><image>What is 1 + 1?" and records[1].solution == "2"
    assert records[3].source == f"{path}:row 3"
    assert records[1].image_path is None and records[1].key_steps == []


def test_easyr1_save_to_disk_and_parquet_folder(tmp_path):
    items = sample_items(4)
    folder = write_easyr1_disk(tmp_path / "disk", items)
    assert [len(r.images) for r in load_records(folder)] == [1, 2, 1, 2]
    from datasets import DatasetDict, load_from_disk

    DatasetDict({"train": load_from_disk(str(folder)),
                 "test": load_from_disk(str(folder)).select([0])}).save_to_disk(tmp_path / "dd")
    assert len(load_records(tmp_path / "dd")) == 4
    assert len(load_records(f"{tmp_path / 'dd'}:test")) == 1
    shards = tmp_path / "shards" / "data"
    write_easyr1_parquet(shards / "train-00000-of-00002.parquet", items[:3])
    write_easyr1_parquet(shards / "train-00001-of-00002.parquet", items[3:])
    write_easyr1_parquet(shards / "test-00000-of-00001.parquet", items[:1])
    records = load_records(tmp_path / "shards")
    assert len(records) == 4  # train only
    assert records[3].source == f"{shards / 'train-00001-of-00002.parquet'}:row 0"
    assert len(load_records(f"{tmp_path / 'shards'}:test")) == 1


def test_r1vl_released_json_list(tmp_path):
    path = write_r1vl_json(tmp_path / "r1vl.json", sample_items(3))
    starts = [n for n, line in enumerate(path.read_text().splitlines(), 1) if line == "  {"]
    records = load_records(path)
    assert [r.solution for r in records] == ["1", "2", "3"]  # <answer> tags unwrapped
    assert records[2].key_steps == [["2 + 1 = 3"]]
    assert records[0].image_path == tmp_path / "imgs" / "0_0.png"
    assert [r.source for r in records] == [f"{path}:{n}" for n in starts]


def test_custom_columns_through_column_map(tmp_path):
    path = write_custom_jsonl(tmp_path / "custom.jsonl", sample_items(3))
    with pytest.raises(ValueError, match=r"no known layout has the columns .* --column-map"):
        load_records(path)
    records = load_records(path, column_map=CUSTOM)
    assert [r.question for r in records] == [f"What is {k} + 1?" for k in range(3)]
    assert records[1].key_steps == [["1 + 1 = 2"]] and records[1].solution == "2"
    assert load_records(path, column_map={"question": "query", "solution": "gt",
                                          "image": "img"})[0].key_steps == []
    with pytest.raises(ValueError, match="lacks"):
        load_records(path, column_map=["question=nope"])


def test_sharegpt_trl_mathvista(tmp_path):
    items = sample_items(4)
    (tmp_path / "a").mkdir(), (tmp_path / "b").mkdir(), (tmp_path / "c").mkdir()
    sft = load_records(write_sharegpt_json(tmp_path / "a" / "m.json", items), require_response=True)
    assert [len(r.images) for r in sft] == [1, 2, 1, 2]
    assert sft[1].response.startswith("### Step 1:") and sft[1].solution == "2"
    trl = load_records(write_trl_jsonl(tmp_path / "b" / "t.jsonl", items))
    assert trl[3].question == "<image><image>What is 3 + 1?" and trl[3].solution == "4"
    vista = read_records(write_mathvista_json(tmp_path / "c" / "v.json", items))
    assert vista.layout == "mathvista" and len(vista.records) == 4
    assert vista.records[1].question.endswith("Choices:\n(A) 2\n(B) 7")


def test_text_only_and_placeholder_count(tmp_path):
    path = tmp_path / "d.jsonl"
    path.write_text(json.dumps({"question": "2 + 2?", "solution": "4"}) + "\n"
                    + json.dumps({"question": "<image><image> 2 + 2?", "solution": "4",
                                  "images": ["a.png"]}) + "\n")
    (tmp_path / "a.png").write_bytes(b"")
    report = read_records(path)
    assert report.records[0].images == [] and report.records[0].image_path is None
    assert report.bad == [f"{path}:2: field 'image': cannot read image '{tmp_path / 'a.png'}' "
                          "(cannot identify image file "
                          f"'{tmp_path / 'a.png'}')"] or "cannot read image" in report.bad[0]
    from PIL import Image

    Image.new("RGB", (32, 32)).save(tmp_path / "a.png")
    with pytest.raises(ValueError, match=r"d.jsonl:2: field 'question' has 2 <image> "
                                         r"placeholder\(s\) for 1 image"):
        load_records(path)


def test_skip_bad_and_parquet_rows_named(tmp_path):
    items = sample_items(4)
    items[2]["question"] = " "
    path = write_easyr1_parquet(tmp_path / "bad.parquet", items)
    with pytest.raises(ValueError, match=r"bad.parquet:row 2: field 'question'"):
        load_records(path)
    with pytest.warns(UserWarning, match=r"skipped 1 of 4 records"):
        assert len(load_records(path, skip_bad=True)) == 3


def test_hub_id_offline_is_one_clear_line(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    import datasets

    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)
    with pytest.raises(ValueError, match=r"cannot load 'hiyouga/geometry3k:test' from the Hugging "
                                         r"Face hub .*save_to_disk") as info:
        load_records("hiyouga/geometry3k:test")
    assert "\n" not in str(info.value)


def test_column_map_parsing_and_layout_detection():
    assert parse_column_map(["question=q", "image = img"]) == {"question": "q", "image": "img"}
    with pytest.raises(ValueError, match="unknown field 'answer'"):
        parse_column_map(["answer=a"])
    with pytest.raises(ValueError, match="must look like field=column"):
        parse_column_map(["question"])
    assert detect_layout(["image", "question", "solution", "key_steps"]) == "ours"
    assert detect_layout(["image_path", "problem", "solution", "key_steps"]) == "r1vl"
    assert detect_layout(["images", "problem", "answer"]) == "easyr1"
    assert detect_layout(["messages", "images"]) == "sharegpt"
    assert detect_layout(["prompt", "image", "solution"]) == "trl"
    assert detect_layout(["pid", "question", "decoded_image", "choices", "answer"]) == "mathvista"
