"""The offline synthetic visual-reasoning task (task.py, problems.py) and the tiny / real-shaped
Qwen-VL checkpoint factories (tiny_model.py, real_shapes.py) the tests, demo and benchmarks use."""
