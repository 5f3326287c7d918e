"""XLNet against Hugging Face's XLNetLMHeadModel (transformers, PyTorch, float32) on the same random weights, mapped
by the converter's table (lmx.convert.mappings.XLNET): two consecutive segments of each row with the memory of the
first carried into the second, token types, a permutation mask and a target mapping. The logits agree to 1e-5
relative, the memories exactly (to float32 rounding), and one training step's loss and every gradient (1e-4)."""

import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lmx import config_lib
from lmx.convert import families, hf_config, tensors
from lmx.models import build_model
from lmx.objectives import cross_entropy_terms

CONFIG_DIR = pathlib.Path(__file__).resolve().parents[2] / "configs"
VOCAB, EMBED, HEADS, HEAD_DIM, MLP, LAYERS, MEMORY = 64, 32, 4, 8, 48, 2, 6
ROWS, LENGTH, PREDICT = 2, 10, 4
LOGITS_RTOL, LOSS_RTOL = 1e-5, 1e-4


def lmx_config():
    """configs/xlnet_tiny.py at the sizes of the HF model below."""
    config = config_lib.load_config_file(str(CONFIG_DIR / "xlnet_tiny.py"))
    m = config.model
    m.vocab_size, m.embed_dim, m.num_heads, m.head_dim, m.mlp_dim = VOCAB, EMBED, HEADS, HEAD_DIM, MLP
    m.num_encoder_layers, m.mem_len, m.dropout_rate = LAYERS, MEMORY, 0.0
    return config.model


def segment(seed: int) -> dict[str, np.ndarray]:
    """A segment of each row: tokens, A/B token types, a random factorization order whose last PREDICT tokens are
    predicted (their ranks, their positions) and the targets."""
    rng = np.random.default_rng(seed)
    tokens = rng.integers(2, VOCAB, (ROWS, LENGTH))
    types = (np.arange(LENGTH)[None] >= rng.integers(2, LENGTH, (ROWS, 1))).astype(np.int64)
    ranks, positions = np.zeros((ROWS, LENGTH), np.int64), np.zeros((ROWS, PREDICT), np.int64)
    for b in range(ROWS):
        order = rng.permutation(LENGTH)
        ranks[b, order[-PREDICT:]] = np.arange(1, PREDICT + 1)
        positions[b] = np.sort(order[-PREDICT:])
    targets = np.take_along_axis(tokens, positions, axis=1)
    return {"tokens": tokens, "types": types, "ranks": ranks, "positions": positions, "targets": targets}


def hf_inputs(seg, torch) -> dict:
    """HF's perm_mask (1 = may not attend; the query stream's mask, HF lets the content stream see itself too) and
    target_mapping (one-hot rows of the predicted positions)."""
    ranks = seg["ranks"]
    sees = ranks[:, None, :] <= ranks[:, :, None]
    sees &= ~np.eye(LENGTH, dtype=bool)[None]
    mapping = np.zeros((ROWS, PREDICT, LENGTH), np.float32)
    mapping[np.arange(ROWS)[:, None], np.arange(PREDICT)[None], seg["positions"]] = 1
    return {
        "input_ids": torch.from_numpy(seg["tokens"]),
        "token_type_ids": torch.from_numpy(seg["types"]),
        "perm_mask": torch.from_numpy((~sees).astype(np.float32)),
        "target_mapping": torch.from_numpy(mapping),
    }


def lmx_batch(seg) -> dict:
    return {
        "encoder_input_tokens": jnp.asarray(seg["tokens"], jnp.int32),
        "encoder_token_types": jnp.asarray(seg["types"], jnp.int32),
        "encoder_perm_rank": jnp.asarray(seg["ranks"], jnp.int32),
        "encoder_target_positions": jnp.asarray(seg["positions"], jnp.int32),
    }


@pytest.fixture(scope="module")
def models(torch, transformers):
    torch.manual_seed(0)
    hf = transformers.XLNetConfig(
        vocab_size=VOCAB,
        d_model=EMBED,
        n_layer=LAYERS,
        n_head=HEADS,
        d_inner=MLP,
        ff_activation="gelu",
        layer_norm_eps=1e-12,
        dropout=0.0,
        mem_len=MEMORY,
    )
    model = transformers.XLNetLMHeadModel(hf).eval()
    with torch.no_grad():  # noise on every parameter: unit LayerNorm scales and zero biases would hide a swap
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    config = lmx_config()
    family = families.FAMILIES["xlnet"]
    hf_config.check(family.config, hf.to_dict(), config)  # the config table accepts this pair
    state = {k: v.detach().numpy() for k, v in model.state_dict().items()}
    params, initialised = tensors.to_lmx(state, config, family, "XLNetLMHeadModel", jax.random.key(0))
    assert initialised == []
    return model, config, params, family


def test_logits_and_memories_match_over_two_segments(models, torch):
    model, config, params, _ = models
    apply = jax.jit(build_model(config).apply)
    mems, carry = None, None
    for seed in (1, 2):  # the first segment has no memory (HF: mems=None), the second the first one's
        seg = segment(seed)
        with torch.no_grad():
            out = model(**hf_inputs(seg, torch), mems=mems, use_mems=True)
        mems = out.mems
        result = apply({"params": params}, lmx_batch(seg), carry=carry)
        theirs = out.logits.numpy()
        assert result["logits"].shape == theirs.shape == (ROWS, PREDICT, VOCAB)
        relative = np.abs(np.asarray(result["logits"]) - theirs).max() / np.abs(theirs).max()
        assert relative < LOGITS_RTOL, (seed, relative)
        carry = result["carry"]  # [B, layers, M, D]; HF: per layer [M, B, D]
        np.testing.assert_allclose(carry, np.stack([m.numpy().swapaxes(0, 1) for m in mems], 1), atol=1e-5)


def test_training_step_loss_and_gradients_match(models, torch):
    """The second segment (reading the first one's memory), its loss and gradients: what one train step uses."""
    model, config, params, family = models
    first, second = segment(1), segment(2)
    with torch.no_grad():
        mems = model(**hf_inputs(first, torch), use_mems=True).mems
    model.zero_grad()
    their_loss = model(**hf_inputs(second, torch), mems=mems, labels=torch.from_numpy(second["targets"])).loss
    their_loss.backward()
    their_loss = float(their_loss.detach())

    ours = build_model(config)
    carry = jax.jit(ours.apply)({"params": params}, lmx_batch(first))["carry"]

    def loss(p):
        logits = ours.apply({"params": p}, lmx_batch(second), carry=carry)["logits"]
        weights = jnp.ones(second["targets"].shape)
        terms = cross_entropy_terms(logits, jnp.asarray(second["targets"]), weights, "", z_loss=0.0, label_smoothing=0)
        return terms["cross_entropy"][0] / weights.sum()

    value, grads = jax.jit(jax.value_and_grad(loss))(params)
    assert abs(float(value) - their_loss) <= LOSS_RTOL * their_loss
    their_grads = {n: p.grad.numpy() for n, p in model.named_parameters(remove_duplicate=False) if p.grad is not None}
    mapped, _ = tensors.to_lmx(their_grads, config, family, "XLNetLMHeadModel", jax.random.key(0))
    ours_flat, theirs_flat = tensors.flatten(grads), tensors.flatten(mapped)
    assert set(ours_flat) == set(theirs_flat)
    for path in ours_flat:
        scale = np.abs(theirs_flat[path]).max()
        assert np.abs(np.asarray(ours_flat[path]) - theirs_flat[path]).max() <= LOSS_RTOL * scale + 1e-7, path


def test_export_writes_the_same_tensors(models):
    _, config, params, family = models
    exported = tensors.to_hf(params, config, family)
    again, _ = tensors.to_lmx(exported, config, family, "XLNetLMHeadModel", jax.random.key(0))
    jax.tree.map(np.testing.assert_array_equal, again, jax.tree.map(np.asarray, params))
    written = hf_config.to_hf(family.config, config)
    assert written["mem_len"] == MEMORY and written["d_head"] == HEAD_DIM and written["ff_activation"] == "gelu"
