"""Evaluation: tasks (TASKS), one runner for every kind of model. Torch-free unless a torch model is evaluated."""
