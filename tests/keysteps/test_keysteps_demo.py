"""The demo's key-step and weak-teacher settings (demo.key_steps, demo.sft_layout_break,
demo.sft_layout_faults) and the RL data that `--set demo.key_steps=extracted` trains on."""

import json

import pytest

from stepgrpo_fast.synthetic.task import generate, write_dataset
from stepgrpo_fast.demo import DemoSettings, make_settings
from stepgrpo_fast.keysteps import extract_file, extract_key_steps
from stepgrpo_fast.rewards import match_key_steps
from stepgrpo_fast.data.records import load_records


def test_settings_defaults_overrides_and_errors():
    default = DemoSettings()
    assert (default.key_steps, default.sft_layout_break) == ("generator", 0.0)
    assert default.sft_layout_faults == ["misnumbered", "no_rationales", "answer_first"]
    s = make_settings(["key_steps=extracted", "sft_layout_break=0.6", "sft_layout_faults=[misnumbered]"])
    assert (s.key_steps, s.sft_layout_break, s.sft_layout_faults) == ("extracted", 0.6, ["misnumbered"])
    for bad, message in (("key_steps=gold", "demo.key_steps"), ("sft_layout_break=1.5", "sft_layout_break"),
                         ("sft_layout_faults=[sideways]", "sft_layout_faults"),
                         ("sft_layout_faults=[]", "sft_layout_faults")):
        with pytest.raises(ValueError, match=message):
            make_settings([bad])


def test_extracted_rl_records_as_the_demo_writes_them(tmp_path):
    """write_dataset(rl_response=True) then extract_file in place (what _run_pipeline does for
    demo.key_steps=extracted): every RL record keeps its fields, gets key steps extracted from its
    exact reference reasoning, loads for training, and its reference scores k = 1 on them."""
    paths = write_dataset(tmp_path, seed=2, n_sft=4, n_rl=24, n_eval=4, kinds=("add", "area", "compare"),
                          sft_carry_slip=1.0, rl_response=True)
    before = [json.loads(line) for line in paths["rl"].read_text().splitlines()]
    summary = extract_file(paths["rl"], paths["rl"])
    after = [json.loads(line) for line in paths["rl"].read_text().splitlines()]
    assert summary.records == summary.with_groups == 24 and summary.quality.recall == 1.0
    assert [{k: v for k, v in r.items() if k != "key_steps"} for r in after] == \
        [{k: v for k, v in r.items() if k != "key_steps"} for r in before]
    assert [r["key_steps"] for r in after] == [extract_key_steps(r["response"]) for r in before]
    exact = generate(2, 24, split="rl", kinds=("add", "area", "compare"))
    assert [r["response"] for r in after] == [p.response for p in exact]  # no carry slip in RL
    records = load_records(paths["rl"])
    assert match_key_steps([r.response for r in records], [r.key_steps for r in records]) == [1.0] * 24


@pytest.mark.slow
def test_tiny_demo_trains_on_extracted_key_steps_and_broken_sft_layouts(tmp_path):
    """A few steps of the real pipeline (in-process) with both options on: the RL stage reads
    the extracted key steps, the SFT stage the broken traces; evaluation keeps the generator's."""
    from stepgrpo_fast import demo
    from stepgrpo_fast.rewards import step_validity_reward

    overrides = demo.split_overrides([
        "demo.n_sft=16", "demo.n_rl=8", "demo.n_eval=4", "demo.eval_max_new_tokens=16",
        "demo.eval_batch_size=4", "demo.processes=1", "demo.key_steps=extracted",
        "demo.sft_layout_break=1.0", "demo.sft_layout_faults=[answer_first]",
        "sft.max_steps=2", "sft.per_device_batch_size=8", "rl.max_steps=1",
        "rl.per_device_batch_size=2", "rl.num_generations=2", "rl.max_new_tokens=8"])
    report = demo.run_demo(tmp_path, seed=1, settings=demo.make_settings(overrides["demo"]),
                           sft_overrides=overrides["sft"], rl_overrides=overrides["rl"], progress=False)
    data = tmp_path / "data"
    rl = [json.loads(line) for line in (data / "rl.jsonl").read_text().splitlines()]
    assert [r["key_steps"] for r in rl] == [extract_key_steps(r["response"]) for r in rl]
    assert "records: 8; with key steps: 8" in (data / "rl_keysteps.txt").read_text()
    sft = [json.loads(line) for line in (data / "sft.jsonl").read_text().splitlines()]
    assert step_validity_reward([r["response"] for r in sft]) == [0.0] * 16
    plain = write_dataset(tmp_path / "plain", seed=1, n_sft=16, n_rl=8, n_eval=4,
                          kinds=("add", "area", "compare"))
    assert (data / "eval.jsonl").read_text() == plain["eval"].read_text()  # the generator's key steps
    assert report["config"]["demo"]["key_steps"] == "extracted"
    assert report["config"]["stepgrpo"]["train_data"] == str(data / "rl.jsonl")

