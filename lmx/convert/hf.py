"""python -m lmx.convert.hf import|export: Hugging Face checkpoints in and out of lmx.

  python -m lmx.convert.hf import --hf_dir=DIR --config=configs/X.py[:arg] --out=OUT [--config.a.b=value ...]
      reads DIR (config.json + model.safetensors, or pytorch_model.bin as a plain state dict; tokenizer files), checks
      config.json against config.model field by field, and writes OUT/checkpoints/0 (params-only orbax checkpoint:
      train from it with --config.checkpoint.init_from=OUT/checkpoints/0) and OUT/tokenizer (the checkpoint's own
      tokenizer, for config.data.vocab_path).
  python -m lmx.convert.hf export --checkpoint=WORKDIR/checkpoints/STEP --config=configs/X.py[:arg] --out=OUT
      writes OUT/{config.json, model.safetensors, tokenizer files} for transformers' from_pretrained.

Bad input (a missing or malformed file, a pickle that is not a plain state dict, a config.json of another
architecture or size, a missing, unexpected or misshapen tensor) is one line `lmx.convert.hf: error: ...` and exit 2.
Both commands write into a temporary directory beside OUT and rename it at the end: OUT is untouched on error.
"""

# ruff: noqa: E402 (the CLI hides TensorFlow's native start-up logs before the imports below load it)
from __future__ import annotations

import sys

from lmx import quiet

if __name__ == "__main__":
    quiet.hold_native_stderr()  # released once the imports are done, or shown with the traceback if one fails

import argparse
import contextlib
import dataclasses
import os
import shutil
import tempfile

import jax
import ml_collections

from lmx import checkpoint, config_lib
from lmx.convert import ConversionError, families, hf_config, hf_files, lmx_files, tensors, tokenizer
from lmx.data.special_tokens import VocabularyError, VocabularyFileNotFound
from lmx.models.options import check_model_config

PROG = "lmx.convert.hf"
EXIT_BAD_INPUT = 2
# Errors of bad input: each carries a one-line message naming the bad value and the fix.
BAD_INPUT = (
    ConversionError,
    config_lib.ConfigError,
    VocabularyError,
    VocabularyFileNotFound,
    checkpoint.UnreadableCheckpoint,
    FileNotFoundError,
)


@dataclasses.dataclass
class Imported:
    step_dir: str  # OUT/checkpoints/0, for config.checkpoint.init_from
    family: str
    architecture: str
    num_params: int
    initialised: list[str]  # lmx parameters the checkpoint's class lacks (taken from lmx's init)
    vocab: tokenizer.Tokenizer | None  # the checkpoint's tokenizer as lmx reads it, or None


def check_config(config: ml_collections.ConfigDict) -> None:
    """The lmx config's own checks (types, ranges, family options) before it is compared with config.json."""
    config_lib.check_fields(config)
    try:
        check_model_config(config.model)
    except ValueError as e:
        raise config_lib.ConfigError(str(e)) from e


def import_checkpoint(hf_dir: str, config: ml_collections.ConfigDict, out: str) -> Imported:
    """Hugging Face directory `hf_dir` -> lmx checkpoint `out`/checkpoints/0 (+ `out`/tokenizer); see the module."""
    check_config(config)
    check_out(out)
    hf = hf_files.read_config(hf_dir)
    family, architecture = families.of_hf_config(hf)
    hf_config.check(family.config, hf, config.model)
    state = hf_files.read_weights(hf_dir)
    rng = jax.random.key(config.train.seed)
    params, initialised = tensors.to_lmx(state, config.model, family, architecture, rng)
    with _new_directory(out) as tmp:
        vocab = tokenizer.import_tokenizer(hf_dir, os.path.join(tmp, tokenizer.DIRECTORY), family)
        saved = config.copy_and_resolve_references()
        if vocab is not None:  # the saved config records where the model's own tokenizer is
            vocab.apply(saved.data, os.path.join(os.path.abspath(out), tokenizer.DIRECTORY))
        lmx_files.write_checkpoint(params, saved, tmp)
    step_dir = os.path.join(checkpoint.checkpoint_dir(out), str(lmx_files.STEP))
    num_params = sum(x.size for x in jax.tree.leaves(params))
    return Imported(step_dir, family.model_type, architecture, num_params, initialised, vocab)


def export_checkpoint(step_dir: str, config: ml_collections.ConfigDict, out: str) -> families.Family:
    """lmx checkpoint step directory -> Hugging Face directory `out`; returns the family it was written as."""
    check_config(config)
    check_out(out)
    family = families.of_lmx_config(config.model)
    hf = hf_config.to_hf(family.config, config.model)
    try:
        checkpoint.check_init_from(step_dir, config.model)  # a step directory of the same architecture
    except ValueError as e:  # a checkpoint of another model (UnreadableCheckpoint is bad input as it is)
        if isinstance(e, checkpoint.UnreadableCheckpoint):
            raise
        raise ConversionError(f"--checkpoint={step_dir}: {e}") from e
    params = lmx_files.read_params(step_dir, config.model)
    state = tensors.to_hf(params, config.model, family)
    with _new_directory(out) as tmp:
        token_ids = tokenizer.export_tokenizer(config, tmp, family)
        hf_files.write_json(
            {
                **hf,
                "architectures": [family.export_architecture],
                **family.token_ids,
                **(token_ids or {}),
                "dtype": "float32",
            },
            os.path.join(tmp, hf_files.CONFIG_FILE),
        )
        hf_files.write_safetensors(state, os.path.join(tmp, hf_files.SAFETENSORS_FILE))
    return family


def check_out(out: str) -> None:
    """--out must not exist, or be an empty directory (checked first, and again before writing)."""
    if os.path.exists(out) and not (os.path.isdir(out) and not os.listdir(out)):
        raise ConversionError(f"--out={out} exists and is not an empty directory; choose a new --out")


@contextlib.contextmanager
def _new_directory(out: str):
    """A temporary directory beside `out`, renamed to `out` when the block succeeds and removed when it fails."""
    out = os.path.abspath(out)
    check_out(out)
    parent = os.path.dirname(out)
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(dir=parent, prefix=f".{os.path.basename(out)}.tmp-")
    try:
        yield tmp
        if os.path.isdir(out):
            os.rmdir(out)
        os.rename(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # argparse's usage + error, as one line and exit 2
        raise ConversionError(f"{message} (see python -m {PROG} --help)")


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog=f"python -m {PROG}", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    imp = commands.add_parser("import", help="Hugging Face directory -> lmx checkpoint")
    imp.add_argument("--hf_dir", required=True, help="directory of config.json + model.safetensors (+ tokenizer)")
    exp = commands.add_parser("export", help="lmx checkpoint -> Hugging Face directory")
    exp.add_argument("--checkpoint", required=True, help="a checkpoint step directory, WORKDIR/checkpoints/STEP")
    for command in (imp, exp):
        command.add_argument("--config", required=True, help="configs/X.py[:arg] of the model (the lmx side)")
        command.add_argument("--out", required=True, help="directory to create (must not exist or be empty)")
    return parser


def run(argv: list[str]) -> str:
    """Parses `argv` (no program name) and runs the command; returns what to print. Raises BAD_INPUT errors."""
    args, rest = _parser().parse_known_args(argv)
    unknown = [a for a in rest if not a.startswith(("--config.", "--noconfig."))]
    if unknown:
        raise ConversionError(f"unrecognized arguments: {' '.join(unknown)} (see python -m {PROG} --help)")
    config = config_lib.check_overrides([f"--config={args.config}", *rest])
    if args.command == "import":
        done = import_checkpoint(args.hf_dir, config, args.out)
        lines = [
            f"Wrote {done.step_dir}: {done.num_params:,} parameters of a {done.family} {done.architecture}.",
            f"Train from it with --config.checkpoint.init_from={done.step_dir}",
        ]
        if done.initialised:
            lines.append(f"Not in the checkpoint, initialised by lmx: {', '.join(sorted(done.initialised))}")
        if done.vocab is not None:
            directory = os.path.join(os.path.abspath(args.out), tokenizer.DIRECTORY)
            lines.append(f"Its tokenizer: {' '.join(done.vocab.flags(directory))}")
        else:
            lines.append(f"{args.hf_dir} has no tokenizer files: set config.data.vocab_path to the model's own")
        return "\n".join(lines)
    family = export_checkpoint(args.checkpoint, config, args.out)
    done = f"Wrote {args.out}: a {family.model_type} {family.export_architecture} for transformers' from_pretrained."
    if not os.path.exists(os.path.join(args.out, tokenizer.TOKENIZER_CONFIG)):
        done += " No tokenizer: config.data.vocab_path names none and no auto-trained one is cached."
    return done


def main(argv: list[str] | None = None) -> int:
    """The CLI: 0 on success, 2 with one line `lmx.convert.hf: error: ...` on bad input."""
    try:
        print(run(sys.argv[1:] if argv is None else argv))
    except BAD_INPUT as e:
        message = " ".join(str(e).split("\n")) or type(e).__name__
        print(f"{PROG}: error: {message}", file=sys.stderr)
        return EXIT_BAD_INPUT
    return 0


if __name__ == "__main__":
    quiet.release_native_stderr()  # the imports are done
    quiet.configure_logging(verbose=False)  # absl/orbax chatter and Python warnings hidden, as in lmx.train
    sys.exit(main())
