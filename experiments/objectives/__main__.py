"""python -m experiments.objectives [--smoke] [--out=DIR] [--plan] ... (every flag: experiments/harness/cli.py)."""

from experiments.harness.cli import entry
from experiments.objectives.study import build

if __name__ == "__main__":
    entry(build)
