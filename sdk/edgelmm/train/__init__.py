"""Training: recipes (RECIPES), the shared step loop, losses, checkpoints and built-in datasets.

Importing this package is cheap and torch-free; torch is imported by the modules that need it.
"""
