"""StepGRPOConfig / SFTConfig: released defaults, YAML loading, typed overrides, clear errors."""

from pathlib import Path

import pytest

from stepgrpo_fast.trainer.config import SFTConfig, StepGRPOConfig, coerce_value, parse_override

CONFIG_DIR = Path(__file__).resolve().parents[2] / "stepgrpo_fast" / "configs"


def test_rl_defaults_are_the_released_recipe():
    c = StepGRPOConfig()
    assert c.num_generations == 4
    assert c.temperature == 1.2
    assert c.max_new_tokens == 1024
    assert c.learning_rate == 1e-6 and c.lr_scheduler_type == "linear" and c.warmup_ratio == 0.0
    assert c.beta == 0.04 and c.epsilon_low == 0.2 and c.epsilon_high == 0.2
    assert c.num_iterations == 1 and c.max_grad_norm == 1.0 and c.loss_type == "grpo"
    assert c.reward_weights == [1.0, 1.0] and c.reward_mode == "paper" and c.alpha == 0.1
    assert c.max_pixels == 400_000
    assert c.freeze_vision is False  # the released RL trains every parameter
    assert c.report_to == "none"


def test_sft_defaults_are_the_released_warmup():
    c = SFTConfig()
    assert c.num_epochs == 2.0
    assert c.lr_scheduler_type == "cosine" and c.warmup_ratio == 0.03
    assert c.learning_rate == 2e-5 and c.freeze_vision is True


def test_yaml_and_overrides_are_typed(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text(
        "learning_rate: 1e-5\nnum_generations: 8\nreward_weights: [1, 0.5]\nrun_name: 7\n"
    )
    c = StepGRPOConfig.from_yaml(
        path,
        overrides=[
            "beta=0",
            "report_to=tensorboard",
            "eval_data=null",
            "max_steps=3",
            "temperature=1",
        ],
    )
    assert c.learning_rate == 1e-5 and isinstance(c.learning_rate, float)  # YAML reads 1e-5 as text
    assert c.num_generations == 8
    assert c.reward_weights == [1.0, 0.5] and all(isinstance(w, float) for w in c.reward_weights)
    assert c.run_name == "7"
    assert c.beta == 0.0 and isinstance(c.beta, float)
    assert c.temperature == 1.0 and isinstance(c.temperature, float)
    assert c.report_to == "tensorboard" and c.eval_data is None and c.max_steps == 3


def test_later_override_wins():
    c = StepGRPOConfig.from_yaml(None, overrides=["seed=1", "seed=5"])
    assert c.seed == 5


def test_unknown_keys_are_named_with_suggestions(tmp_path):
    with pytest.raises(
        ValueError,
        match=r"unknown StepGRPOConfig option 'lerning_rate'.*did you mean learning_rate",
    ):
        StepGRPOConfig.from_yaml(None, overrides=["lerning_rate=1e-6"])
    path = tmp_path / "c.yaml"
    path.write_text("num_generation: 4\n")
    with pytest.raises(
        ValueError, match=r"c\.yaml: unknown StepGRPOConfig option 'num_generation'"
    ):
        StepGRPOConfig.from_yaml(path)
    # an RL-only option is unknown to the SFT config
    with pytest.raises(ValueError, match="unknown SFTConfig option 'beta'"):
        SFTConfig.from_yaml(None, overrides=["beta=0.1"])


@pytest.mark.parametrize(
    "override, error, pattern",
    [
        ("num_generations=abc", TypeError, r"num_generations: expected int"),
        ("num_generations=2.5", TypeError, r"num_generations: expected int"),
        ("beta=true", TypeError, r"beta: expected float"),
        ("freeze_vision=3", TypeError, r"freeze_vision: expected bool"),
        ("reward_weights=1.0", TypeError, r"reward_weights: expected"),
        ("reward_weights=[1, x]", TypeError, r"reward_weights\[1\]: expected float"),
        ("num_generations=1", ValueError, r"num_generations must be >= 2"),
        ("loss_type=ppo", ValueError, r"loss_type must be one of"),
        ("reward_mode=strict", ValueError, r"reward_mode must be one of"),
        ("report_to=mlfow", ValueError, r"report_to must be one of"),
        ("report_to=none,wandb", ValueError, r"report_to must be one of"),
        ("temperature=0", ValueError, r"temperature must be > 0"),
        ("reward_weights=[1.0]", ValueError, r"reward_weights must hold two numbers"),
        ("min_pixels=500000", ValueError, r"min_pixels .* must be <= max_pixels"),
        ("extra_reward_funcs=[nocolon]", ValueError, r"extra_reward_weights has 0 entries"),
        ("no_equals_sign", ValueError, r"key=value"),
    ],
)
def test_bad_overrides_fail_clearly(override, error, pattern):
    with pytest.raises(error, match=pattern):
        StepGRPOConfig.from_yaml(None, overrides=[override])


def test_extra_reward_spec_format():
    with pytest.raises(ValueError, match="must look like 'package.module:function'"):
        StepGRPOConfig(extra_reward_funcs=["nocolon"], extra_reward_weights=[1.0])
    c = StepGRPOConfig(extra_reward_funcs=["pkg.mod:fn"], extra_reward_weights=[0.5])
    assert c.extra_reward_funcs == ["pkg.mod:fn"]


def test_missing_config_file_and_bad_top_level(tmp_path):
    with pytest.raises(FileNotFoundError, match="config file not found"):
        StepGRPOConfig.from_yaml(tmp_path / "nope.yaml")
    bad = tmp_path / "list.yaml"
    bad.write_text("- 1\n- 2\n")
    with pytest.raises(TypeError, match="top level must be a mapping"):
        StepGRPOConfig.from_yaml(bad)


def test_round_trip_through_yaml(tmp_path):
    c = StepGRPOConfig.from_yaml(None, overrides=["num_generations=3", "reward_weights=[2, 1]"])
    c.to_yaml(tmp_path / "out.yaml")
    assert StepGRPOConfig.from_yaml(tmp_path / "out.yaml") == c


@pytest.mark.parametrize(
    "name, cls",
    [
        ("sft_tiny.yaml", SFTConfig),
        ("stepgrpo_tiny.yaml", StepGRPOConfig),
        ("qwen2vl_2b_sft.yaml", SFTConfig),
        ("qwen2vl_2b_stepgrpo.yaml", StepGRPOConfig),
    ],
)
def test_shipped_configs_load(name, cls):
    c = cls.from_yaml(CONFIG_DIR / name)
    assert c.model_name_or_path and c.train_data


def test_released_2b_rl_config_keeps_the_recipe():
    c = StepGRPOConfig.from_yaml(CONFIG_DIR / "qwen2vl_2b_stepgrpo.yaml")
    assert (c.num_generations, c.temperature, c.max_new_tokens, c.learning_rate, c.beta) == (
        4,
        1.2,
        1024,
        1e-6,
        0.04,
    )
    assert c.max_pixels == 400_000 and c.dtype == "bfloat16"


def test_accelerate_configs_parse():
    import yaml

    for name in ("ddp.yaml", "zero2.yaml", "zero3.yaml", "cpu_2proc.yaml"):
        data = yaml.safe_load((CONFIG_DIR / "accelerate" / name).read_text())
        assert data["num_processes"] >= 2 and "distributed_type" in data


def test_parse_override_and_coerce_helpers():
    assert parse_override("a=[1, 2]") == ("a", [1, 2])
    assert parse_override("a=") == ("a", "")
    assert coerce_value("x", "1e-3", float) == 1e-3
    with pytest.raises(TypeError, match="None is not allowed"):
        coerce_value("x", None, int)


def test_no_option_is_declared_twice():
    """A second `name: type = field(...)` in a config class silently replaces the first (and
    moves it); each option is declared once in the source."""
    import ast
    import inspect

    from stepgrpo_fast.trainer.config import base, runs

    for module in (base, runs):
        for node in ast.walk(ast.parse(inspect.getsource(module))):
            if isinstance(node, ast.ClassDef):
                names = [s.target.id for s in node.body
                         if isinstance(s, ast.AnnAssign) and isinstance(s.target, ast.Name)]
                twice = sorted({n for n in names if names.count(n) > 1})
                assert not twice, f"{module.__name__}.{node.name} declares {twice} twice"
