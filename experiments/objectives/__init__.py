"""The objectives study: python -m experiments.objectives (see README.md here)."""
