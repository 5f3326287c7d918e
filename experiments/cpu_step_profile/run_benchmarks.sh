#!/bin/bash
# Runs every command of BENCHMARKS.md back to back (about 25 minutes on 2 CPU cores); one log per run in $1.
# Usage: experiments/cpu_step_profile/run_benchmarks.sh [log dir, default /tmp/bench_runs]
cd "$(dirname "$0")/../.."
LOGS=${1:-/tmp/bench_runs}
mkdir -p "$LOGS"
export GLIBC_TUNABLES=${GLIBC_TUNABLES-glibc.malloc.hugetlb=1}
B=".venv/bin/python -m lmx.bench"
SMALL="--config=configs/t5_small.py --config.train.batch_size=8 --config.data.inputs_length=512 --config.data.targets_length=114 --config.model.dtype=float32"
run() { name=$1; shift; echo "== $name: $*" > $LOGS/$name.log; /usr/bin/time -v "$@" >> $LOGS/$name.log 2>&1; echo "done $name"; }
run tiny $B --config=configs/t5_tiny.py --steps=10 --warmup=2
run small $B $SMALL --steps=5 --warmup=1
GLIBC_TUNABLES= run small_nohuge $B $SMALL --steps=5 --warmup=1
run small_unrolled $B $SMALL --config.model.scan_layers=false --steps=5 --warmup=1
for L in 2 8 24; do
  for S in true false; do
    run layers_${L}_scan_${S} $B --config=configs/t5_tiny.py --config.model.num_encoder_layers=$L --config.model.num_decoder_layers=$L --config.model.scan_layers=$S --steps=2 --warmup=1
  done
done
run tiny_input $B --config=configs/t5_tiny.py --mode=input --steps=50 --warmup=5
run small_input $B $SMALL --config.data.corpus=embedded --config.data.vocab_pieces=2000 --mode=input --steps=20 --warmup=3
run remat .venv/bin/python experiments/cpu_step_profile/interleave.py --config=configs/t5_small.py --rounds=3 --base=train.batch_size=8,data.inputs_length=512,data.targets_length=114,model.dtype=float32 --variant=none:model.remat_policy=none --variant=full:model.remat_policy=full --variant=dots:model.remat_policy=dots --variant=dots_with_no_batch_dims:model.remat_policy=dots_with_no_batch_dims
run profile .venv/bin/python experiments/cpu_step_profile/profile_step.py --config=configs/t5_small.py --overrides=train.batch_size=8,data.inputs_length=512,data.targets_length=114,model.dtype=float32 --top=30
echo ALL DONE
