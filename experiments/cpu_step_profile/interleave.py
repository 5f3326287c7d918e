"""Interleaved step-time comparison of config variants in one process (the fair A/B on a noisy shared machine).

    python experiments/cpu_step_profile/interleave.py --config=configs/t5_small.py --rounds=4 \
        --base=train.batch_size=8,data.inputs_length=512,data.targets_length=114,model.dtype=float32 \
        --variant=baseline: --variant=dots:model.remat_policy=dots --variant=unrolled:model.scan_layers=false

Every variant's train step (lmx.train.setup + lmx.train.jit_train_step, as lmx.bench builds it) is compiled first;
then each round runs one synchronised step of every variant, in an order that alternates between rounds. A variant's
ratio is the median over rounds of its step time over the first variant's step time in the same round, so a burst of
other load slows both sides of a ratio. Prints one line per variant and a final JSON line.

An override `a.b=v` sets config.a.b; `@package.module.NAME=v` sets a module global before that variant is traced,
for A/B-testing a code path behind a temporary switch (how the DenseGeneral and position-bias changes in
BENCHMARKS.md were measured: their switches were removed once the new form won).
"""

from __future__ import annotations

import argparse
import importlib
import json
import statistics
import tempfile
import time

import flax.linen as nn
import jax

from lmx import bench, config_lib, train


def parse_value(text: str):
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    if text.lower() in ("true", "false"):
        return text.lower() == "true"
    return text


def apply_overrides(config, overrides: str):
    """`a.b=v` sets config.a.b; `@module.NAME=v` sets a module global (a code switch under test) before tracing."""
    for item in filter(None, overrides.split(",")):
        key, value = item.split("=", 1)
        if key.startswith("@"):
            module_name, attr = key[1:].rsplit(".", 1)
            setattr(importlib.import_module(module_name), attr, parse_value(value))
            continue
        *path, leaf = key.split(".")
        node = config
        for part in path:
            node = node[part]
        node[leaf] = type(node[leaf])(parse_value(value)) if not isinstance(node[leaf], tuple) else node[leaf]
    return config


def build(config_path: str, overrides: str):
    config = config_lib.load_config_file(config_path)
    config = apply_overrides(config, overrides)
    workdir = tempfile.mkdtemp()
    run = train.setup(config, workdir, with_data=False)
    with jax.set_mesh(run.mesh), nn.logical_axis_rules(run.rules):
        state = jax.jit(run.init_fn, out_shardings=run.state_shardings)(run.init_key)
        start = time.perf_counter()
        compiled = (
            train.jit_train_step(run)
            .lower(run.abstract_state, bench.batch_spec(config, run.batch_sharding), run.dropout_key)
            .compile()
        )
        compile_s = time.perf_counter() - start
        batch = bench.synthetic_batch(config, run.batch_sharding)
    temp = compiled.memory_analysis().temp_size_in_bytes
    return {"run": run, "state": state, "step": compiled, "batch": batch, "compile_s": compile_s, "temp": temp}


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--config", required=True)
    parser.add_argument("--base", default="")
    parser.add_argument("--variant", action="append", required=True, help="name:override,override")
    parser.add_argument("--rounds", type=int, default=4)
    args = parser.parse_args()

    variants = {}
    for spec in args.variant:
        name, overrides = spec.split(":", 1)
        variants[name] = build(args.config, ",".join(filter(None, [args.base, overrides])))
        print(f"compiled {name}: {variants[name]['compile_s']:.1f} s, temp {variants[name]['temp'] / 2**30:.2f} GiB")

    def one_step(v):
        start = time.perf_counter()
        with jax.set_mesh(v["run"].mesh):
            v["state"], metrics = v["step"](v["state"], v["batch"], v["run"].dropout_key)
            jax.block_until_ready((v["state"], metrics))
        return time.perf_counter() - start, float(metrics["loss"])

    names = list(variants)
    for name in names:  # warm-up: first execution faults in buffers
        one_step(variants[name])
    times = {name: [] for name in names}
    losses = {}
    for r in range(args.rounds):
        order = names if r % 2 == 0 else names[::-1]
        for name in order:
            seconds, losses[name] = one_step(variants[name])
            times[name].append(seconds)
        print(f"round {r}: " + ", ".join(f"{n} {times[n][-1]:.2f}s" for n in names), flush=True)
    base = names[0]
    result = {}
    for name in names:
        ratio = statistics.median(t / b for t, b in zip(times[name], times[base], strict=True))
        result[name] = {
            "step_s": statistics.median(times[name]),
            "ratio": ratio,
            "temp_gib": variants[name]["temp"] / 2**30,
            "compile_s": variants[name]["compile_s"],
            "last_loss": losses[name],
        }
        print(
            f"{name:<24} step {result[name]['step_s']:.3f} s  ratio {ratio:.3f}  "
            f"temp {result[name]['temp_gib']:.2f} GiB  compile {result[name]['compile_s']:.1f} s"
        )
    print(json.dumps(result))


if __name__ == "__main__":
    main()
