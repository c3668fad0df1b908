"""`stepgrpo sft|train --KEY VALUE`: every option as a typed flag (trainer/config/flags.py, built
by transformers' HfArgumentParser), layered YAML < flags < --set, TRL's names as flags too."""
from __future__ import annotations

import pytest

from stepgrpo_fast import cli
from stepgrpo_fast.trainer.config import SFTConfig, StepGRPOConfig
from stepgrpo_fast.trainer.config.flags import given_options


def _config(command: str, *argv: str):
    args = cli.build_parser(command).parse_args([command, *argv])
    cls = SFTConfig if command == "sft" else StepGRPOConfig
    return cls.from_yaml(args.config, overrides=args.overrides, options=given_options(args, cls))


def test_flags_are_typed_by_the_dataclass_annotations():
    c = _config("train", "--learning_rate", "1e-5", "--num_generations", "3",
                "--reward_weights", "2", "0.5", "--use_peft", "--no_progress_bar",
                "--eval_data", "held_out.jsonl", "--lora-target-modules", "q_proj", "v_proj")
    assert (c.learning_rate, c.num_generations, c.reward_weights) == (1e-5, 3, [2.0, 0.5])
    assert c.use_peft is True and c.progress_bar is False and c.eval_data == "held_out.jsonl"
    assert c.lora_target_modules == ["q_proj", "v_proj"]
    assert _config("train", "--use_peft", "false").use_peft is False
    assert _config("sft", "--freeze_vision", "false").freeze_vision is False  # SFT default: true


def test_yaml_then_flags_then_set(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text("learning_rate: 3.0e-6\nbeta: 0.1\nseed: 7\n")
    c = _config("train", "--config", str(path), "--beta", "0.2", "--seed", "8", "--set", "seed=9")
    # a flag not given leaves the file's value alone (no dataclass default sneaks in)
    assert (c.learning_rate, c.beta, c.seed) == (3e-6, 0.2, 9)


def test_trl_names_as_flags(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text("max_new_tokens: 64\nnum_generations: 4\n")
    c = _config("train", "--config", str(path), "--max_completion_length", "32",
                "--scale_rewards", "false", "--per_device_train_batch_size", "8",
                "--num_train_epochs", "2")
    assert (c.max_new_tokens, c.advantage_scale, c.per_device_batch_size, c.num_epochs) == \
        (32, "none", 2, 2.0)
    assert _config("train", "--scale_rewards", "batch").advantage_scale == "batch"
    with pytest.raises(ValueError, match="multiple of num_generations=4"):
        _config("train", "--config", str(path), "--per_device_train_batch_size", "6")


def test_bad_flags_fail_with_argparse_messages(capsys):
    parser = cli.build_parser("train")
    for argv, message in ((["--num_generations", "abc"], "invalid int value: 'abc'"),
                          (["--use_peft", "maybe"], "--use_peft"),
                          (["--lerning_rate", "1e-6"], "unrecognized arguments: --lerning_rate")):
        with pytest.raises(SystemExit) as exit_info:
            parser.parse_args(["train", *argv])
        assert exit_info.value.code == 2
        assert message in capsys.readouterr().err
    # range checks still run on flag values
    with pytest.raises(ValueError, match="num_generations must be >= 2"):
        _config("train", "--num_generations", "1")
    # an RL-only option is not a flag of `stepgrpo sft`
    with pytest.raises(SystemExit):
        cli.build_parser("sft").parse_args(["sft", "--beta", "0.1"])
    assert "unrecognized arguments: --beta" in capsys.readouterr().err


def test_train_command_passes_the_flags_to_the_run(monkeypatch, tmp_path):
    import stepgrpo_fast.trainer.loop as loop

    seen = {}

    def fake_run(config, resume=None):
        seen["config"], seen["resume"] = config, resume
        return {}

    monkeypatch.setattr(loop, "run_config", lambda kind: (StepGRPOConfig, fake_run))
    monkeypatch.setattr("stepgrpo_fast.trainer.cli._print_summary", lambda summary: None)
    assert cli.main(["train", "--temperature", "0.9", "--set", "top_p=0.95"]) == 0
    assert (seen["config"].temperature, seen["config"].top_p, seen["resume"]) == (0.9, 0.95, None)
    assert cli.main(["train", "--temperature", "0"]) == 2  # a range error: one line, exit 2
