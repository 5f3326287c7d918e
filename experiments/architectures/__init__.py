"""The architectures study: python -m experiments.architectures (see README.md here)."""
