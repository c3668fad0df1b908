"""The run configurations and their parsing.

    runs.py     SFTConfig, StepGRPOConfig (the options of each stage, with their checks)
    base.py     TrainConfigBase: the options both stages share, YAML + ``--set`` loading
    names.py    TRL's option names as aliases, per-option help
    flags.py    every option as a typed ``--KEY VALUE`` command-line flag
    parsing.py  value coercion and range checks
"""

from stepgrpo_fast.trainer.config.runs import *  # noqa: F401,F403 - the names `trainer.config` always had
from stepgrpo_fast.trainer.config.runs import SFTConfig, StepGRPOConfig, TrainConfigBase  # noqa: F401
