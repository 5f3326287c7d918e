"""The switch_vs_dense study: python -m experiments.switch_vs_dense (see README.md here)."""
