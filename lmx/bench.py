"""python -m lmx.bench --config=configs/t5_tiny.py [--config.a.b=value ...] [--steps=N] [--warmup=W]
                      [--mode=step|input|decode] [--synthetic | --real] [--peak_size=M] [--input_seconds=S]
                      [--batch_sizes=1,16 --prompt_length=64 --new_tokens=256 --uncached_tokens=8]   (decode)

Measures the real train step of a config (built by lmx.train.setup and lmx.train.jit_train_step, the code path of
training) and prints a table, then one final JSON line with every number:

  compile_time_s      lower (trace) + compile of the train step, ahead of time on abstract inputs
  step_time_s         median of `steps` timed steps after `warmup` untimed ones, each ended by block_until_ready
  tokens_per_s        input tokens of a step (every *_input_tokens position) / step_time_s, as lmx.train counts
  flops_per_step      model FLOPs (lmx.flops: PaLM appendix B; remat recomputation not counted)
  peak_flops          a square [M, M] matmul per device in the config's dtype, same process and devices: the fastest
                      of 2 x 5 runs just before and after the timed steps (peak_flops_median: their median)
  mfu                 flops_per_step / step_time_s / peak_flops: utilisation against the *measured* matmul peak
  *_bytes             the compiled step's memory_analysis(), per device: arguments, outputs, temporaries, code
  xla_flops_per_device  XLA's cost analysis of the compiled step: counts recomputation and elementwise ops, but a
                      while loop's body only once, so it undercounts scanned stacks (compare it unrolled)

Batches are synthetic by default (random tokens of the pipeline's shapes and dtypes, made on device with the batch
sharding; no vocabulary needed); --real feeds the config's seqio pipeline, whose time then counts in each step.
--mode=input times the seqio pipeline alone (this process's rows of each batch, after warm-up, for at least
--input_seconds), then the step on synthetic batches, and reports their ratio: above 1 the pipeline outruns
what training consumes.
--mode=decode measures decoding instead of training (lmx.inference.decode_bench: prefill and cached decode tokens/s
per batch size, the KV-cache bytes, and cached vs uncached decoding).
"""

from __future__ import annotations

import json
import os
import statistics
import sys
import tempfile
import time

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from lmx import config_lib, flops, sharding, train
from lmx.config_lib import ConfigError
from lmx.data import tasks
from lmx.models.layers import dtype_of

# Timed matmuls of the peak measurement before, and again after, the timed steps.
MATMUL_REPEATS = 5


def is_token_feature(name: str) -> bool:
    """Model features named *_tokens hold token ids (the rest are segment ids, positions, weights, flags)."""
    return name.endswith("_tokens")


def batch_spec(config: ml_collections.ConfigDict, batch_sharding: NamedSharding) -> dict[str, jax.ShapeDtypeStruct]:
    """Shapes, dtypes (int32, as seqio emits) and sharding of a global batch."""
    rows = config.train.batch_size
    return {
        name: jax.ShapeDtypeStruct((rows, length), jnp.int32, sharding=batch_sharding)
        for name, length in tasks.model_feature_lengths(config.data).items()
    }


def synthetic_batch(
    config: ml_collections.ConfigDict, batch_sharding: NamedSharding, seed: int = 0
) -> dict[str, jax.Array]:
    """A global batch of random tokens, made on device straight into `batch_sharding`: one example per row, no
    padding (the step's work does not depend on the values)."""
    spec = batch_spec(config, batch_sharding)

    def make(key):
        batch = {}
        for index, (name, s) in enumerate(sorted(spec.items())):
            if is_token_feature(name):
                # Ids 0 (pad) and 1 (eos) avoided: every position is a real token.
                batch[name] = jax.random.randint(jax.random.fold_in(key, index), s.shape, 2, config.model.vocab_size)
            elif name.endswith("_positions"):
                batch[name] = jnp.broadcast_to(jnp.arange(s.shape[1], dtype=jnp.int32), s.shape)
            else:  # segment ids and loss weights: 1 everywhere
                batch[name] = jnp.ones(s.shape, jnp.int32)
        return batch

    return jax.jit(make, out_shardings={name: batch_sharding for name in spec})(jax.random.key(seed))


class PeakMatmul:
    """A square [size, size] x [size, size] matmul per device, all devices at once, in the config's dtype.

    The same process, devices, dtype and XLA runtime as the train step, so MFU compares like with like. The peak is
    the fastest of the timed matmuls: other load on a shared machine only ever slows a matmul down, and a median
    taken under contention would understate the peak and overstate MFU.
    """

    def __init__(self, dtype: jnp.dtype, size: int):
        devices = jax.devices()
        per_device = NamedSharding(Mesh(np.array(devices), ("devices",)), PartitionSpec("devices"))
        shape = (len(devices), size, size)
        make = jax.jit(lambda key: jax.random.normal(key, shape, dtype), out_shardings=per_device)
        self._a, self._b = make(jax.random.key(1)), make(jax.random.key(2))
        self._matmul = jax.jit(lambda a, b: jnp.einsum("dij,djk->dik", a, b), out_shardings=per_device)
        self.flops = len(devices) * 2 * size**3
        self.seconds()  # compile and warm up

    def seconds(self) -> float:
        start = time.perf_counter()
        jax.block_until_ready(self._matmul(self._a, self._b))
        return time.perf_counter() - start


def memory_stats(compiled) -> dict[str, int]:
    """Per-device bytes of the compiled step (XLA's buffer assignment)."""
    stats = compiled.memory_analysis()
    if stats is None:  # a backend without memory analysis
        return {}
    return {
        "argument_bytes": int(stats.argument_size_in_bytes),
        "output_bytes": int(stats.output_size_in_bytes),
        "alias_bytes": int(stats.alias_size_in_bytes),
        "temp_bytes": int(stats.temp_size_in_bytes),
        "generated_code_bytes": int(stats.generated_code_size_in_bytes),
    }


def xla_flops(compiled) -> float | None:
    """XLA's FLOP estimate of the compiled (per-device) program, or None where the backend gives none."""
    cost = compiled.cost_analysis()
    if isinstance(cost, list | tuple):  # older jax: one dict per program
        cost = cost[0] if cost else None
    if not cost or "flops" not in cost:
        return None
    return float(cost["flops"])


def timed(fn, warmup: int, steps: int) -> list[float]:
    """Seconds of each of `steps` calls of fn() after `warmup` untimed ones; fn must block until its work is done."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return times


def bench_step(run: train.Run, *, steps: int, warmup: int, real: bool, peak_size: int) -> dict:
    """Compiles and times the train step of `run`; the numbers of the module docstring."""
    config = run.config
    with jax.set_mesh(run.mesh), nn.logical_axis_rules(run.rules):
        state = jax.jit(run.init_fn, out_shardings=run.state_shardings)(run.init_key)
        start = time.perf_counter()
        lowered = train.jit_train_step(run).lower(
            run.abstract_state, batch_spec(config, run.batch_sharding), run.dropout_key
        )
        lowered_at = time.perf_counter()
        compiled = lowered.compile()
        compiled_at = time.perf_counter()

        if real:

            def next_batch():
                return sharding.global_batch_from_host(next(run.train_iter), run.batch_sharding)
        else:
            fixed = synthetic_batch(config, run.batch_sharding)

            def next_batch():
                return fixed

        def one_step():
            nonlocal state
            state, metrics = compiled(state, next_batch(), run.dropout_key)
            jax.block_until_ready((state, metrics))

        # Matmuls in two blocks, before and after the steps, so a burst of other load cannot skew them all.
        peak = PeakMatmul(dtype_of(config.model.dtype), peak_size)
        matmul_times = [peak.seconds() for _ in range(MATMUL_REPEATS)]
        times = timed(one_step, warmup, steps)
        matmul_times += [peak.seconds() for _ in range(MATMUL_REPEATS)]

    count = flops.train_flops_per_step(config)
    if count["params"] != run.num_params:  # the counter no longer matches the model: say so, keep going
        print(
            f"lmx.bench: warning: lmx.flops counts {count['params']:,} parameters, the model has {run.num_params:,}",
            file=sys.stderr,
        )
    step_time = statistics.median(times)
    peak_flops = peak.flops / min(matmul_times)
    tokens_per_step = count["tokens"]
    result = {
        "platform": jax.devices()[0].platform,
        "glibc_tunables": os.environ.get("GLIBC_TUNABLES", ""),  # Makefile sets glibc.malloc.hugetlb=1
        "devices": jax.device_count(),
        "dtype": config.model.dtype,
        "batch_size": config.train.batch_size,
        "feature_lengths": tasks.model_feature_lengths(config.data),
        "data": "real" if real else "synthetic",
        "params": run.num_params,
        "active_params": count["active_params"],
        "tokens_per_step": tokens_per_step,
        "flops_per_step": count["total"],
        **{f"flops_{part}": count[part] for part in flops.PARTS},
        "lower_time_s": lowered_at - start,
        "compile_time_s": compiled_at - start,
        "step_time_s": step_time,
        "step_time_min_s": min(times),
        "step_time_max_s": max(times),
        "steps": steps,
        "tokens_per_s": tokens_per_step / step_time,
        "peak_flops": peak_flops,
        "peak_flops_median": peak.flops / statistics.median(matmul_times),
        "peak_matmul_size": peak_size,
        "mfu": count["total"] / step_time / peak_flops,
        **memory_stats(compiled),
    }
    xla = xla_flops(compiled)
    if xla is not None:
        result["xla_flops_per_device"] = xla
    return result


def bench_input(run: train.Run, *, steps: int, warmup: int, min_seconds: float) -> dict:
    """Sustained tokens/s of this process's input pipeline alone (its rows of each global batch).

    tf.data prefetches in background threads, so the first batches after a pause come from a full buffer: the
    pipeline is read for at least `steps` batches and `min_seconds`, so that the buffer's head start is a small
    part of the measured time.
    """
    config = run.config
    rows = config.train.batch_size // jax.process_count()
    tokens_per_batch = rows * tasks.input_tokens_per_row(config.data)
    for _ in range(warmup):
        next(run.train_iter)
    batches, start = 0, time.perf_counter()
    while batches < steps or time.perf_counter() - start < min_seconds:
        next(run.train_iter)
        batches += 1
    elapsed = time.perf_counter() - start
    return {
        "input_batches": batches,
        "input_rows_per_batch": rows,
        "input_tokens_per_s": batches * tokens_per_batch / elapsed,
    }


def _human(value) -> str:
    if isinstance(value, float):
        for limit, suffix in ((1e12, "T"), (1e9, "G"), (1e6, "M")):
            if abs(value) >= limit:
                return f"{value / limit:.3f}{suffix}"
        return f"{value:,.1f}" if abs(value) >= 100 else f"{value:.4g}"
    if isinstance(value, int) and abs(value) >= 10**4:
        return f"{value:,}"
    return str(value)


def print_report(result: dict) -> None:
    """A readable table, then the whole result as the last line of stdout (one JSON object)."""
    width = max(len(name) for name in result)
    for name, value in result.items():
        print(f"{name:<{width}}  {_human(value)}")
    print(json.dumps(result), flush=True)


def benchmark(
    config: ml_collections.ConfigDict,
    *,
    mode: str,
    steps: int,
    warmup: int,
    real: bool,
    peak_size: int,
    input_seconds: float,
):
    """Runs the benchmark of `mode` ("step" or "input") on `config`; returns the result dict."""
    if steps < 1 or warmup < 0 or input_seconds < 0:
        raise ConfigError(f"--steps={steps} must be >= 1, --warmup={warmup} and --input_seconds={input_seconds} >= 0")
    if mode not in ("step", "input"):
        raise ConfigError(f"--mode={mode!r} is unknown; choose step, input or decode")
    with tempfile.TemporaryDirectory() as workdir:  # setup checks the workdir for checkpoints; nothing is written
        run = train.setup(config, workdir, with_data=real or mode == "input")
        result = {"mode": mode}
        if mode == "input":
            result.update(bench_input(run, steps=steps, warmup=warmup, min_seconds=input_seconds))
        result.update(bench_step(run, steps=steps, warmup=warmup, real=real, peak_size=peak_size))
        if mode == "input":
            consumed = result["tokens_per_s"] / jax.process_count()  # this process's share of the step's tokens
            result["input_to_step_ratio"] = result["input_tokens_per_s"] / consumed
    return result


def main(argv) -> None:
    from absl import flags, logging

    del argv
    logging.set_verbosity(logging.WARNING)
    f = flags.FLAGS
    if f["synthetic"].present and f.synthetic and f.real:
        print("lmx.bench: error: --synthetic and --real contradict each other; pass one", file=sys.stderr)
        sys.exit(train.EXIT_BAD_INPUT)
    real = f.real or not f.synthetic
    peak_size = f.peak_size or (2048 if jax.devices()[0].platform == "cpu" else 8192)
    try:
        if f.mode == "decode":
            from lmx.inference.decode_bench import bench_decode

            batch_sizes = [int(b) for b in f.batch_sizes]
            if min(batch_sizes) < 1 or min(f.prompt_length, f.new_tokens, f.uncached_tokens) < 1:
                raise ConfigError("--batch_sizes, --prompt_length, --new_tokens and --uncached_tokens must be >= 1")
            result = bench_decode(
                f.config,
                batch_sizes=batch_sizes,
                prompt_length=f.prompt_length,
                new_tokens=f.new_tokens,
                uncached_tokens=f.uncached_tokens,
            )
            print_report({"config": f["config"].config_filename, **result})
            return
        result = benchmark(
            f.config,
            mode=f.mode,
            steps=f.steps,
            warmup=f.warmup,
            real=real,
            peak_size=peak_size,
            input_seconds=f.input_seconds,
        )
    except (ValueError, FileNotFoundError) as e:
        print(f"lmx.bench: error: {e}", file=sys.stderr)
        sys.exit(train.EXIT_BAD_INPUT)
    result = {"config": f["config"].config_filename, **result}
    print_report(result)


def run() -> None:
    from absl import app, flags
    from ml_collections import config_flags

    try:
        config_lib.check_overrides(sys.argv[1:])
    except ConfigError as e:
        print(f"lmx.bench: error: {e}", file=sys.stderr)
        sys.exit(train.EXIT_BAD_INPUT)
    config_flags.DEFINE_config_file("config", None, "Path to a config file (configs/*.py[:arg]).", lock_config=True)
    flags.DEFINE_integer("steps", 10, "Timed train steps (or input batches); the step time is their median.")
    flags.DEFINE_integer("warmup", 2, "Untimed steps (or input batches) before timing.")
    flags.DEFINE_enum(
        "mode", "step", ["step", "input", "decode"], "step: the train step; input: the pipeline too; decode: decoding"
    )
    flags.DEFINE_list("batch_sizes", ["1", "16"], "--mode=decode: the batch sizes to time.")
    flags.DEFINE_integer("prompt_length", 64, "--mode=decode: prompt tokens per row.")
    flags.DEFINE_integer("new_tokens", 256, "--mode=decode: new tokens per row.")
    flags.DEFINE_integer("uncached_tokens", 8, "--mode=decode: tokens of the uncached baseline (constant cost each).")
    flags.DEFINE_bool("synthetic", True, "Random-token batches made on device (the default).")
    flags.DEFINE_bool("real", False, "Batches from the config's seqio pipeline (its time counts in each step).")
    flags.DEFINE_integer("peak_size", 0, "Side of the peak-FLOPs matmul; 0: 2048 on CPU, 8192 on accelerators.")
    flags.DEFINE_float("input_seconds", 10.0, "--mode=input: seconds of pipeline reading, at least.")
    flags.mark_flags_as_required(["config"])
    app.run(main)


if __name__ == "__main__":
    run()
