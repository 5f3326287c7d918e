"""The moe_routing study: python -m experiments.moe_routing (see README.md here)."""
