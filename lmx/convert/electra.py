"""python -m lmx.convert.electra --checkpoint=WORKDIR/checkpoints/STEP --config=configs/X.py[:arg] --out=OUT

ELECTRA fine-tunes its discriminator alone (Clark et al. 2020, section 3.1: "we throw out the generator and only
fine-tune the discriminator"). This writes the discriminator of an ELECTRA run's checkpoint (model "electra",
config X) as an encoder-only checkpoint, OUT/checkpoints/0:
  1. reads the run's params (checked against X's architecture, as config.checkpoint.init_from is);
  2. takes the discriminator's embeddings and encoder (`lmx.models.electra.discriminator_params`: EncoderOnly's
     layout) and gives the encoder-only heads ELECTRA never trained (MLM head, pooler, pair classifier) the
     encoder-only model's own initialisation (seed config.train.seed), as a fresh fine-tuning head would be;
  3. saves them with X's config turned encoder-only (`lmx.models.electra.encoder_only_config`).
Then any encoder-only config of the same dimensions starts from it: --config.checkpoint.init_from=OUT/checkpoints/0
(e.g. `--config=configs/electra_small.py --config.model.name=encoder_only`, or a fine-tuning config).

Bad input (not a checkpoint, a config that is not ELECTRA or not the checkpoint's architecture, an OUT that exists)
is one line `lmx.convert.electra: error: ...` and exit 2, with nothing written.
"""

# ruff: noqa: E402 (the CLI hides TensorFlow's native start-up logs before the imports below load it)
from __future__ import annotations

import sys

from lmx import quiet

if __name__ == "__main__":
    quiet.hold_native_stderr()  # released once the imports are done

import argparse
import functools
import os

import flax.linen as nn
import jax
import ml_collections
import numpy as np

from lmx import checkpoint, config_lib, step
from lmx.convert import ConversionError, hf, lmx_files
from lmx.data import tasks
from lmx.models import build_model, electra
from lmx.models.options import check_model_config

PROG = "lmx.convert.electra"


def _params(model_config: ml_collections.ConfigDict, data_config: ml_collections.ConfigDict, key, *, abstract: bool):
    """The unboxed parameters of `model_config` (ShapeDtypeStructs when `abstract`) for the objective's features."""
    model = build_model(model_config)
    init = functools.partial(
        step.init_params, model=model, init_batch=step.init_batch(tasks.model_feature_lengths(data_config))
    )
    if abstract:
        return nn.unbox(jax.eval_shape(init, key))
    return jax.device_get(nn.unbox(jax.jit(init)(key)))


def export_discriminator(step_dir: str, config: ml_collections.ConfigDict, out: str) -> tuple[str, int, list[str]]:
    """ELECTRA checkpoint step directory -> encoder-only checkpoint OUT/checkpoints/0; returns (its step
    directory, its parameter count, the parameter groups initialised here rather than read)."""
    if config.model.name != "electra":
        raise ConversionError(
            f"config.model.name={config.model.name!r}: --config must be the ELECTRA config the checkpoint was trained "
            "with (model 'electra')"
        )
    check_model_config(config.model)
    try:
        checkpoint.check_init_from(step_dir, config.model)  # a step directory of this architecture
    except ValueError as e:
        if isinstance(e, checkpoint.UnreadableCheckpoint):
            raise
        raise ConversionError(f"--checkpoint={step_dir}: {e}") from e
    abstract = _params(config.model, config.data, jax.random.key(0), abstract=True)
    device = jax.sharding.SingleDeviceSharding(jax.local_devices(backend="cpu")[0])
    trained = checkpoint.read_params(step_dir, abstract, jax.tree.map(lambda _: device, abstract))
    saved = config.copy_and_resolve_references()
    saved.model = electra.encoder_only_config(config.model)
    saved.data.objective = "mlm"  # an encoder-only objective, so that the saved config is a valid one
    saved.checkpoint.init_from = ""
    check_model_config(saved.model)
    params = _params(saved.model, saved.data, jax.random.key(config.train.seed), abstract=False)
    discriminator = jax.tree.map(np.asarray, electra.discriminator_params(trained))
    initialised = sorted(set(params) - set(discriminator))
    params.update(discriminator)
    with hf._new_directory(out) as tmp:  # written beside OUT, renamed at the end: nothing left on error
        lmx_files.write_checkpoint(params, saved, tmp)
    step_dir = os.path.join(checkpoint.checkpoint_dir(out), str(lmx_files.STEP))
    return step_dir, sum(x.size for x in jax.tree.leaves(params)), initialised


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # argparse's usage + error, as one line and exit 2
        raise ConversionError(f"{message} (see python -m {PROG} --help)")


def run(argv: list[str]) -> str:
    """Parses `argv` (no program name), exports, and returns what to print. Raises hf.BAD_INPUT errors."""
    parser = _Parser(prog=f"python -m {PROG}", description=__doc__.split("\n")[2])
    parser.add_argument("--checkpoint", required=True, help="the ELECTRA run's step directory, WORKDIR/checkpoints/N")
    parser.add_argument("--config", required=True, help="configs/X.py[:arg] the run was trained with")
    parser.add_argument("--out", required=True, help="directory to create (must not exist or be empty)")
    args, rest = parser.parse_known_args(argv)
    unknown = [a for a in rest if not a.startswith(("--config.", "--noconfig."))]
    if unknown:
        raise ConversionError(f"unrecognized arguments: {' '.join(unknown)} (see python -m {PROG} --help)")
    config = config_lib.check_overrides([f"--config={args.config}", *rest])
    step_dir, count, initialised = export_discriminator(args.checkpoint, config, args.out)
    return (
        f"Wrote {step_dir}: the discriminator as an encoder-only model, {count:,} parameters.\n"
        f"Initialised here (ELECTRA has none): {', '.join(initialised)}\n"
        f"Fine-tune from it with --config.checkpoint.init_from={step_dir}"
    )


def main(argv: list[str] | None = None) -> int:
    """The CLI: 0 on success, 2 with one line `lmx.convert.electra: error: ...` on bad input."""
    try:
        print(run(sys.argv[1:] if argv is None else argv))
    except hf.BAD_INPUT as e:
        message = " ".join(str(e).split("\n")) or type(e).__name__
        print(f"{PROG}: error: {message}", file=sys.stderr)
        return hf.EXIT_BAD_INPUT
    return 0


if __name__ == "__main__":
    quiet.release_native_stderr()  # the imports are done
    quiet.configure_logging(verbose=False)
    sys.exit(main())
