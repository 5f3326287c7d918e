"""python -m experiments.electra_vs_mlm [--smoke] [--out=DIR] [--plan] ... (every flag: experiments/harness/cli.py)."""

from experiments.electra_vs_mlm.study import build
from experiments.harness.cli import entry

if __name__ == "__main__":
    entry(build)
