"""Experiments run on lmx's public command line (python -m lmx.train / lmx.bench, the fine-tuning configs).

Each study is a package: `python -m experiments.<study> [--smoke] [--out=DIR]` (see experiments/README.md).
The shared machinery is experiments.harness.
"""
