"""The fine-tuning learning rates per parameter (lmx.finetune.optim) against ELECTRA's formula, measured on the
update itself: AdamW's first step moves every weight by lr x g / (|g| + eps) = lr x sign(g), so with a tiny eps and
no weight decay |update| of each weight is its learning rate."""

import flax.linen as nn
import jax
import numpy as np
import pytest
from finetune_tiny import flat, tiny_config

from lmx.finetune import optim as finetune_optim
from lmx.finetune import session

LR, HEAD_LR, DECAY, LAYERS = 1e-3, 5e-3, 0.8, 3


def _expected(path: str) -> float | np.ndarray:
    """ELECTRA's layer-wise decay written out: the head at its own rate, layer i of L at lr decay^(L - i),
    everything the first layer reads (embeddings) at lr decay^(L + 1), the rest of the body at lr."""
    if path.startswith("classifier_head/"):
        return HEAD_LR
    parts = path.split("/")
    if "layers" in parts:  # scanned: [layers, ...], one rate per slice
        return LR * DECAY ** (LAYERS - np.arange(LAYERS))
    for part in parts:
        if part.startswith("layers_"):
            return LR * DECAY ** (LAYERS - int(part[len("layers_") :]))
    if "embedder" in parts or parts[0] in ("token_embedder", "mask_embedding") or "relpos_bias" in parts:
        return LR * DECAY ** (LAYERS + 1)
    return LR


@pytest.mark.parametrize("family, scan", [("electra", False), ("electra", True), ("encoder_decoder", False)])
def test_each_parameter_learns_at_its_layer_rate(family, scan):
    config = tiny_config(family, layers=LAYERS, scan=scan)
    config.finetune.layer_decay, config.finetune.head_learning_rate = DECAY, HEAD_LR
    o = config.optim
    o.name, o.learning_rate, o.warmup_steps, o.decay = "adamw", LR, 0, "constant"
    o.weight_decay, o.clip_norm, o.eps = 0.0, 0.0, 1e-30
    fine = session.FineTuning.prepare(config)
    model = fine.build_model()
    batch = {name: np.ones((1, n), np.int32) for name, n in fine.feature_lengths.items()}
    boxed = jax.eval_shape(
        lambda key: model.init({"params": key}, batch, enable_dropout=False)["params"], jax.random.key(0)
    )
    params = jax.tree.map(lambda s: np.ones(s.shape, s.dtype), nn.unbox(boxed))
    tx, _ = fine.make_optimizer(nn.get_partition_spec(boxed), params)
    grads = jax.tree.map(lambda p: np.random.default_rng(p.size).standard_normal(p.shape).astype(np.float32), params)
    updates, _ = tx.update(grads, tx.init(params), params)
    rates = {path: np.abs(u) for path, u in flat(updates).items()}
    seen_layers = set()
    for path, rate in rates.items():
        want = _expected(path)
        if isinstance(want, np.ndarray):  # broadcast the per-layer rate over each slice
            want = want.reshape((LAYERS,) + (1,) * (rate.ndim - 1)) * np.ones_like(rate)
            seen_layers.update(range(LAYERS))
        elif "layers_" in path:
            seen_layers.add(int(path.split("layers_")[1].split("/")[0]))
        np.testing.assert_allclose(rate, np.broadcast_to(want, rate.shape), rtol=1e-5, err_msg=path)
    assert seen_layers == set(range(LAYERS))
    assert any(path.startswith("classifier_head/") for path in rates)


def test_the_scales_follow_the_paths_of_every_family():
    config = tiny_config("xlnet", layers=2)
    config.finetune.layer_decay = 0.5
    tree = {"token_embedder": {"embedding": np.zeros(2)}, "mask_embedding": np.zeros(2), "output_bias": np.zeros(2)}
    tree["encoder"] = {"layers_0": {"w": np.zeros(2)}, "layers_1": {"w": np.zeros(2)}}
    scales = flat(finetune_optim.learning_rate_scales(tree, {}, config.finetune, config.optim, 2))
    assert scales == {
        "token_embedder/embedding": 0.125,
        "mask_embedding": 0.125,
        "output_bias": 1.0,
        "encoder/layers_0/w": 0.25,
        "encoder/layers_1/w": 0.5,
    }


def test_layer_decay_needs_separate_layers():
    config = tiny_config("encoder_only")
    config.finetune.layer_decay = 0.8
    config.model.share_layers = True
    with pytest.raises(ValueError, match=r"config.finetune.layer_decay=0.8: ALBERT's shared layers"):
        finetune_optim.check_layer_decay(config)
