"""python -m experiments.switch_vs_dense [--smoke] [--out=DIR] [--plan] ... (every flag: experiments/harness/cli.py)."""

from experiments.harness.cli import entry
from experiments.switch_vs_dense.study import build

if __name__ == "__main__":
    entry(build)
