"""python -m experiments.moe_routing [--smoke] [--out=DIR] [--plan] ... (every flag: experiments/harness/cli.py)."""

from experiments.harness.cli import entry
from experiments.moe_routing.study import build

if __name__ == "__main__":
    entry(build)
