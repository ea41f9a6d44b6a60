"""The training-step benchmark's parts; ``benchmarks/training_step.py`` runs them."""
