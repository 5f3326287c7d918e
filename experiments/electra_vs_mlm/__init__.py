"""The electra_vs_mlm study: python -m experiments.electra_vs_mlm (see README.md here)."""
