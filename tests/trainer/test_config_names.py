"""Config options: help for every field, TRL's names as aliases (trainer/config/names.py)."""
from __future__ import annotations

import dataclasses
import subprocess
import sys

import pytest

from stepgrpo_fast.trainer.config import SFTConfig, StepGRPOConfig
from stepgrpo_fast.trainer.config.names import options_help


@pytest.mark.parametrize("cls", [SFTConfig, StepGRPOConfig])
def test_every_option_has_help_and_the_listing_names_it(cls):
    text = options_help(cls)
    for f in dataclasses.fields(cls):
        assert f"\n  {f.name} (" in text, f.name
        entry = text.split(f"\n  {f.name} (", 1)[1].split("\n  ", 2)
        assert len(entry) > 1 and entry[1].strip(), f"{cls.__name__}.{f.name} has no help text"


def test_train_help_lists_the_options():
    out = subprocess.run([sys.executable, "-m", "stepgrpo_fast.cli", "train", "--help"],
                         capture_output=True, text=True, check=True).stdout
    for name in ("loss_type", "use_peft", "dynamic_sampling", "per_device_batch_size"):
        assert f"  {name} (" in out
    assert "COMPLETIONS" in out  # the batch-size meaning vs TRL's, said plainly


def test_trl_names_map_onto_ours():
    cfg = StepGRPOConfig.from_yaml(None, ["num_generations=4", "per_device_train_batch_size=8",
                                          "scale_rewards=batch", "max_completion_length=77",
                                          "num_train_epochs=3"])
    assert (cfg.per_device_batch_size, cfg.advantage_scale, cfg.max_new_tokens, cfg.num_epochs) == \
        (2, "batch", 77, 3.0)
    assert StepGRPOConfig.from_dict({"scale_rewards": False}).advantage_scale == "none"
    assert StepGRPOConfig.from_dict({"scale_rewards": True}).advantage_scale == "group"
    # SFT: TRL's SFT batch counts examples, as ours
    assert SFTConfig.from_dict({"per_device_train_batch_size": 3}).per_device_batch_size == 3


def test_trl_alias_in_yaml_and_override_replaces_the_file_value(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text("max_new_tokens: 64\nnum_generations: 2\nper_device_train_batch_size: 4\n")
    cfg = StepGRPOConfig.from_yaml(path, ["max_completion_length=32"])
    assert cfg.max_new_tokens == 32 and cfg.per_device_batch_size == 2


@pytest.mark.parametrize("values, match", [
    ({"max_completion_length": 8, "max_new_tokens": 8}, "not both"),
    ({"num_generations": 4, "per_device_train_batch_size": 6}, "multiple of num_generations=4"),
    ({"scale_rewards": "sometimes"}, "scale_rewards must be"),
])
def test_bad_trl_names_are_named(values, match):
    with pytest.raises(ValueError, match=match):
        StepGRPOConfig.from_dict(values)


def test_an_alias_the_kind_lacks_is_refused():
    with pytest.raises(ValueError, match="max_completion_length"):
        SFTConfig.from_dict({"max_completion_length": 8})
