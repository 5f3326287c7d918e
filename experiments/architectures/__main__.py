"""python -m experiments.architectures [--smoke] [--out=DIR] [--plan] ... (every flag: experiments/harness/cli.py)."""

from experiments.architectures.study import build
from experiments.harness.cli import entry

if __name__ == "__main__":
    entry(build)
