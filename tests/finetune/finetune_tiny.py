"""Tiny models of every family with a classification head, their pretraining checkpoints written by lmx's own
checkpoint code, and a small synthetic SST-2 copy for loop tests that must not need ../shared/data."""

from __future__ import annotations

import functools
import os
import pathlib
import tempfile

import flax.linen as nn
import jax
import numpy as np

from lmx import checkpoint, config_lib, optim, step
from lmx.models import build_model

REPO = pathlib.Path(__file__).resolve().parents[2]
# One $LMX_CACHE_DIR for the fine-tuning tests of a session (as lmx_cli's compilation cache): each vocabulary of
# the embedded corpus is trained once.
VOCAB_CACHE = tempfile.mkdtemp(prefix="lmx-finetune-test-cache-")
FAMILIES = ("encoder_only", "electra", "encoder_decoder", "xlnet")
# The pretraining config of each family, in configs/.
PRETRAINED = {
    "encoder_only": "bert_tiny",
    "electra": "electra_tiny",
    "encoder_decoder": "t5_tiny",
    "xlnet": "xlnet_tiny",
}


def tiny_config(family: str, *, layers: int = 2, scan: bool = False, task: str = "sst2", fmt: str = "classify"):
    """configs/finetune_<task>.py of the family's tiny config shrunk (vocabulary 160 rows, width 32, 2 heads of 16,
    MLP 64, rows of 16 tokens), fine-tuning `task` in format `fmt`; float32."""
    config = config_lib.load_config_file(f"{REPO}/configs/finetune_{task}.py:{PRETRAINED[family]},{fmt}")
    m = config.model
    m.vocab_size, m.embed_dim, m.num_heads, m.head_dim, m.mlp_dim = 160, 32, 2, 16, 64
    m.num_encoder_layers = layers
    if family == "encoder_decoder":
        m.num_decoder_layers = 1
    m.scan_layers, m.remat_policy = scan, "none"
    m.max_length = 64
    if m.embed_proj_dim:
        m.embed_proj_dim = 16
    config.data.inputs_length = config.data.targets_length = 16
    return config


def pretraining_params(config, seed: int = 0) -> dict:
    """Random parameters (numpy, N(0, 1)) of every parameter the pretraining model of `config` has, in its layout:
    what a pretraining run of that config would save (shapes from jax.eval_shape; nothing compiled)."""
    from lmx.data import tasks

    model = build_model(config.model)
    batch = step.init_batch(tasks.model_feature_lengths(config.data))
    init = functools.partial(step.init_params, model=model, init_batch=batch)
    shapes = nn.unbox(jax.eval_shape(init, jax.random.key(0)))
    rng = np.random.default_rng(seed)
    return jax.tree.map(lambda s: rng.standard_normal(s.shape).astype(s.dtype), shapes)


class NoData:
    """A data iterator whose position is nothing (checkpoint.save writes the data item through it)."""

    def save(self, path: str) -> None:
        os.makedirs(path, exist_ok=True)


def write_checkpoint(workdir: pathlib.Path, config, params, step_number: int = 7) -> str:
    """A pretraining run's checkpoint of `params` (TrainState with an AdamW state) in workdir, by lmx.checkpoint;
    returns its step directory."""
    tx, _ = optim.make_optimizer(config.optim, 10, None)  # AdamW, as every tiny config pretrains
    state = step.TrainState(step=np.int32(step_number), params=params, opt_state=tx.init(params))
    manager = checkpoint.make_manager(str(workdir), config.checkpoint)
    checkpoint.save(manager, step_number, state, NoData(), config)
    manager.wait_until_finished()
    manager.close()
    return str(workdir / "checkpoints" / str(step_number))


def flat(tree) -> dict[str, np.ndarray]:
    """'a/b/c' -> array of every leaf."""
    leaves = jax.tree_util.tree_flatten_with_path(tree)[0]
    return {"/".join(str(k.key) for k in path): np.asarray(leaf) for path, leaf in leaves}


def write_sst2(
    data_dir: pathlib.Path, *, train_rows: int = 64, validation_rows: int = 24, bad_label: str | None = None
):
    """A synthetic SST-2 copy in the local layout (glue/sst2/{train,dev,test}.tsv): sentences of a few
    sentiment words, label 1 when the positive ones win. `bad_label` replaces the label of train.tsv's 3rd row."""
    rng = np.random.default_rng(0)
    good, bad = ["good", "great", "fine", "happy"], ["bad", "awful", "sad", "poor"]
    folder = data_dir / "glue" / "sst2"
    folder.mkdir(parents=True, exist_ok=True)

    def rows(n):
        out = []
        for _ in range(n):
            words = list(rng.choice(good + bad, size=rng.integers(2, 6)))
            label = int(sum(w in good for w in words) * 2 > len(words))
            out.append((" ".join(words), str(label)))
        return out

    train = rows(train_rows)
    if bad_label is not None:
        train[2] = (train[2][0], bad_label)
    for name, table in (("train.tsv", train), ("dev.tsv", rows(8)), ("test.tsv", rows(validation_rows))):
        (folder / name).write_text("sentence\tlabel\n" + "".join(f"{s}\t{y}\n" for s, y in table))
    return data_dir
