"""The benchmark harness: one set of cases, providers and timers for every benchmark command.

    stepgrpo bench [--quick] [--groups ...]     (cli.py -> runner.py; also ``python -m bench``
                                                 in a source checkout, a thin layer over this)
    stepgrpo gpu-check                          (tflops.py: the same linear cases and providers,
                                                 reported as TFLOP/s on a CUDA card)

    options.py        command-line options and group names (light: no torch)
    timing.py         timers (p20/p50/p80, interleaved rounds) and peak memory
    machine.py        machine / version info, CSV + JSON result files
    rows.py           the result-row schema and the ratios against each group's baseline
    linear_ops.py     cases and providers of the two fused linear ops (ours, naive, liger, bare)
    group_*.py        one module per group: linear (both ops), advantages, rewards, train_step
    report.py, plots.py   Markdown tables and PNG plots of a run
    tflops.py         FLOP counts, the cards' bf16 peaks and gpu-check's timing table

Nothing here is imported by the ops or the trainer; this package imports them.
"""
