"""The native trainer, in rooms by stage:

    config/      the run configurations and their parsing
    model/       loading checkpoints, precision, LoRA, freezing, the fused policy objective
    rl/          rollouts, rewards -> advantages, dynamic sampling, the StepGRPO step
    sft_loop.py  the SFT warm-up loop
    run.py       the run lifecycle both loops share (start, resume, optimizer step, finish)
    checkpoint.py, logging.py, metrics.py, evaluate.py, launch.py, loop.py, cli.py
"""
