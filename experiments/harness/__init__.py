"""The study harness: a study is a list of named runs of lmx's CLI (config + overrides + seeds).

study.py    Run and Study: what to run, and the command line of each run and seed
compute.py  configs as lmx loads them: model FLOPs per step and parameters (lmx.flops), equal-compute steps
runner.py   runs one at a time, one workdir per run and seed; finished runs are skipped, interrupted ones resume
records.py  what a finished run left: metrics.jsonl, results.json (fine-tuning), the JSON line of lmx.bench
tables.py   Markdown tables with mean ± std over seeds
plots.py    loss against steps, wall time and FLOPs (matplotlib, Agg)
report.py   results.md: the study's tables, every run, the plots, the failures
estimate.py a default study's wall time from short timed runs of each distinct config
cli.py      python -m experiments.<study> [--smoke] [--out=DIR] [--plan] [--report] [--estimate] ...
"""
