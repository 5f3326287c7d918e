"""XLNet (lmx.models.xlnet, lmx.models.two_stream): the masks against the paper's equations, the query stream never
seeing its own token, packed segments kept apart, scanned = unrolled = rematerialised, the fine-tuning hooks, the
published sizes, and xlnet_tiny training in-process with its memory carried exactly through a checkpoint resume.
Hugging Face parity: tests/models/xlnet_parity_test.py."""

import functools
import pathlib

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lmx import checkpoint, config_lib, flops, sharding, step, train
from lmx.data import pipeline, tasks
from lmx.models import build_model
from lmx.models.transformer import unstack_scanned_params
from lmx.models.two_stream import distances, skew
from lmx.models.xlnet import attention_masks, last_token_summary

CONFIG_DIR = pathlib.Path(__file__).resolve().parents[2] / "configs"


def tiny_config(**model):
    """configs/xlnet_tiny.py's model section at test sizes (float32, no dropout)."""
    config = config_lib.load_config_file(str(CONFIG_DIR / "xlnet_tiny.py"))
    m = config.model
    m.vocab_size, m.embed_dim, m.num_heads, m.head_dim, m.mlp_dim, m.mem_len = 64, 16, 2, 8, 32, 4
    m.dropout_rate = 0.0
    m.update(model)
    return config.model


def order_ranks(z: np.ndarray, c: int) -> np.ndarray:
    """encoder_perm_rank of the factorization order z (z[t] = the position predicted t-th) cut after c tokens."""
    ranks = np.zeros(len(z), int)
    ranks[z[c:]] = np.arange(1, len(z) - c + 1)
    return ranks


def reference_masks(z: np.ndarray, c: int) -> tuple[np.ndarray, np.ndarray]:
    """XLNet section 2.3 with partial prediction, position by position (True = may attend):
    content stream h_{z_t} attends to x_{z<=t}; query stream g_{z_t} to x_{z<t} only (never x_{z_t}); the context
    z_{<=c} (never predicted, conditioned on as a whole: log p(x_{z>c} | x_{z<=c})) attends to all of it."""
    length = len(z)
    t = np.empty(length, int)
    t[z] = np.arange(length)  # each position's place in the order
    content, query = np.zeros((length, length), bool), np.zeros((length, length), bool)
    for i in range(length):
        for j in range(length):
            if t[i] >= c:  # a target
                content[i, j], query[i, j] = t[j] <= t[i], t[j] < t[i]
            else:
                content[i, j] = t[j] < c
    return content, query


def test_skew_reads_each_query_distance():
    rng = np.random.default_rng(0)
    memory, length = 3, 5
    keys, rows = memory + length, memory + 2 * length - 1
    scores = rng.normal(size=(2, 4, length, rows)).astype(np.float32)
    shifted = np.asarray(skew(jnp.asarray(scores), keys))
    d = np.asarray(distances(memory, length))
    for i in range(length):
        for j in range(keys):
            row = int(np.flatnonzero(d == memory + i - j)[0])  # the distance of query i (at M + i) and key j
            np.testing.assert_array_equal(shifted[..., i, j], scores[..., i, row])


@pytest.mark.parametrize("memory", [0, 3])
def test_masks_follow_the_paper(memory):
    rng = np.random.default_rng(1)
    length, c = 9, 6
    rows = [(rng.permutation(length), c) for _ in range(2)]
    ranks = np.stack([order_ranks(z, cut) for z, cut in rows])
    targets = np.stack([np.sort(z[cut:]) for z, cut in rows])
    segments = np.ones((2, length), int)
    content, query = attention_masks(jnp.asarray(segments), jnp.asarray(ranks), jnp.asarray(targets), memory)
    for b, (z, cut) in enumerate(rows):
        ref_content, ref_query = reference_masks(z, cut)
        assert np.asarray(content[b, :, :memory]).all()  # the memory is visible to every query
        np.testing.assert_array_equal(content[b, :, memory:], ref_content)
        np.testing.assert_array_equal(query[b, :, memory:], ref_query[targets[b]])
        assert np.asarray(query[b, :, :memory]).all()


def test_packed_masks_are_block_diagonal():
    rng = np.random.default_rng(2)
    z1, z2 = rng.permutation(4), rng.permutation(3)
    ranks = np.concatenate([order_ranks(z1, 2), order_ranks(z2, 1), [0]])[None]
    segments = np.array([[1, 1, 1, 1, 2, 2, 2, 0]])
    content, _ = attention_masks(jnp.asarray(segments), jnp.asarray(ranks), None, 0)
    expected = np.zeros((8, 8), bool)
    expected[:4, :4], expected[4:7, 4:7] = reference_masks(z1, 2)[0], reference_masks(z2, 1)[0]
    np.testing.assert_array_equal(content[0], expected)


def _batch(seed: int, length: int = 10, cut: int = 6, vocab: int = 64) -> dict:
    rng = np.random.default_rng(seed)
    orders = [rng.permutation(length) for _ in range(2)]
    return {
        "encoder_input_tokens": jnp.asarray(rng.integers(3, vocab, (2, length)), jnp.int32),
        "encoder_perm_rank": jnp.asarray(np.stack([order_ranks(z, cut) for z in orders]), jnp.int32),
        "encoder_target_positions": jnp.asarray(np.stack([np.sort(z[cut:]) for z in orders]), jnp.int32),
    }


@pytest.fixture(scope="module")
def tiny():
    m = tiny_config()
    model = build_model(m)
    params = nn.meta.unbox(model.init(jax.random.key(0), _batch(0))["params"])
    return m, model, params, jax.jit(lambda p, b, carry: model.apply({"params": p}, b, carry=carry)["logits"])


@pytest.mark.parametrize("with_memory", [False, True])
def test_query_stream_never_sees_its_own_token(tiny, with_memory):
    """Perturbing a target token leaves its own prediction unchanged, and changes the predictions after it."""
    m, _, params, logits_of = tiny
    batch = _batch(3)
    carry = jax.random.normal(jax.random.key(1), (2, 2, m.mem_len, m.embed_dim)) if with_memory else None
    base = np.asarray(logits_of(params, batch, carry))
    later_changed = 0
    for b in range(2):
        for p, position in enumerate(np.asarray(batch["encoder_target_positions"][b])):
            tokens = batch["encoder_input_tokens"].at[b, position].set(batch["encoder_input_tokens"][b, position] + 1)
            logits = np.asarray(logits_of(params, {**batch, "encoder_input_tokens": tokens}, carry))
            np.testing.assert_allclose(logits[b, p], base[b, p], rtol=0, atol=1e-5)
            ranks = np.asarray(batch["encoder_perm_rank"][b])
            later = [
                q for q, t in enumerate(np.asarray(batch["encoder_target_positions"][b])) if ranks[t] > ranks[position]
            ]
            later_changed += sum(np.abs(logits[b, q] - base[b, q]).max() > 1e-4 for q in later)
            np.testing.assert_array_equal(logits[1 - b], base[1 - b])  # rows never mix
    assert later_changed > 0


def test_packed_segments_never_see_each_other(tiny):
    m, _, params, logits_of = tiny
    segments = np.array([[1] * 5 + [2] * 5, [1] * 10])
    batch = {**_batch(4), "encoder_segment_ids": jnp.asarray(segments, jnp.int32)}
    batch["encoder_positions"] = jnp.asarray(np.array([list(range(5)) * 2, list(range(10))]), jnp.int32)
    base = np.asarray(logits_of(params, batch, None))
    targets = np.asarray(batch["encoder_target_positions"][0])
    other = batch["encoder_input_tokens"].at[0, 5:].set(7)  # rewrite segment 2 of row 0
    logits = np.asarray(logits_of(params, {**batch, "encoder_input_tokens": other}, None))
    first = targets < 5
    np.testing.assert_allclose(logits[0, first], base[0, first], rtol=0, atol=1e-5)
    assert np.abs(logits[0, ~first] - base[0, ~first]).max() > 1e-4


def test_scanned_unrolled_and_rematerialised_agree(tiny):
    m, model, params, _ = tiny
    batch = {**_batch(5), "encoder_token_types": jnp.asarray(np.repeat([[0] * 5 + [1] * 5], 2, 0), jnp.int32)}
    carry = jax.random.normal(jax.random.key(2), (2, 2, m.mem_len, m.embed_dim))
    expected = model.apply({"params": params}, batch, carry=carry)
    unrolled = build_model(tiny_config(scan_layers=False))
    for other, p in (
        (unrolled, unstack_scanned_params(params)),
        (build_model(tiny_config(remat_policy="full")), params),
    ):
        out = other.apply({"params": p}, batch, carry=carry)
        np.testing.assert_allclose(out["logits"], expected["logits"], rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(out["carry"], expected["carry"], rtol=1e-6, atol=1e-6)
    half = build_model(tiny_config(dtype="bfloat16")).apply({"params": params}, batch, carry=carry)
    assert half["carry"].dtype == jnp.bfloat16
    np.testing.assert_allclose(half["logits"], expected["logits"], atol=0.1)
    # The next memory is each layer's input over [memory; segment], last mem_len of it: layer 0's are embeddings.
    embeddings = np.asarray(params["token_embedder"]["embedding"])[np.asarray(batch["encoder_input_tokens"])]
    np.testing.assert_allclose(expected["carry"][:, 0], embeddings[:, -m.mem_len :], rtol=1e-6)


def test_encode_and_last_token_summary(tiny):
    _, model, params, _ = tiny
    batch = {"encoder_input_tokens": jnp.asarray([[5, 6, 7, 8, 0, 0], [9, 10, 11, 12, 13, 14]], jnp.int32)}
    hidden, aux = model.apply({"params": params}, batch, method="encode")
    assert hidden.shape == (2, 6, 16) and aux == {}
    summary = model.apply({"params": params}, hidden, batch, method="summary")
    np.testing.assert_array_equal(summary, np.stack([hidden[0, 3], hidden[1, 5]]))
    segments = jnp.asarray([[1, 1, 2, 0], [1, 1, 1, 1]])
    assert last_token_summary(jnp.arange(8.0).reshape(2, 4, 1), segments)[:, 0].tolist() == [2.0, 7.0]


def _independent_count(m) -> int:
    """XLNet's parameters from the architecture: per layer q, k, v, r, o [D, N H], the biases u, v, s [N H], the two
    segment embeddings [N H], two LayerNorms, the MLP with biases; the token table, w (the query stream's start)
    and the output bias."""
    d, nh, f, v = m.embed_dim, m.num_heads * m.head_dim, m.mlp_dim, m.vocab_size
    layer = 5 * d * nh + 3 * nh + 2 * nh + 2 * 2 * d + (d * f + f) + (f * d + d)
    return m.num_encoder_layers * layer + v * d + d + v


@pytest.mark.parametrize("name, published", [("xlnet_base", 116.8e6), ("xlnet_large", 360.3e6)])
def test_published_sizes(name, published):
    config = config_lib.load_config_file(str(CONFIG_DIR / f"{name}.py"))
    model = build_model(config.model)
    inputs = step.init_batch(tasks.model_feature_lengths(config.data))
    shapes = jax.eval_shape(lambda key: step.init_params(key, model=model, init_batch=inputs), jax.random.key(0))
    count = sum(x.size for x in jax.tree.leaves(shapes))
    assert count == _independent_count(config.model) == flops.train_flops_per_step(config)["params"]
    assert abs(count - published) / published < 0.01, count
    assert inputs["encoder_target_positions"].shape == (1, 85)  # XLNet's num_predict: 512 // K


# ---------------------------------------------------------------------------------------- training and resuming

STEPS, SAVED = 6, 3


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """xlnet_tiny (its architecture, rows of 32 tokens, batch 8) set up as lmx.train does, one compiled step."""
    workdir = tmp_path_factory.mktemp("xlnet")
    patch = pytest.MonkeyPatch()
    patch.setenv("LMX_CACHE_DIR", str(tmp_path_factory.mktemp("cache")))
    config = config_lib.load_config_file(str(CONFIG_DIR / "xlnet_tiny.py"))
    config.data.inputs_length, config.data.vocab_pieces, config.data.stream_window = 32, 1000, 4
    config.model.mem_len = 16
    config.train.steps, config.train.batch_size, config.train.eval_steps = STEPS, 8, 0
    config.optim.learning_rate, config.optim.warmup_steps = 3e-3, 1
    config.checkpoint.async_save = False
    run = train.setup(config, str(workdir))
    with jax.set_mesh(run.mesh), nn.logical_axis_rules(run.rules):
        init = jax.jit(run.init_fn, out_shardings=run.state_shardings)
        step_fn = train.jit_train_step(run)
    yield run, init, step_fn, workdir
    patch.undo()


def _steps(run, step_fn, state, iterator, count):
    losses = []
    with jax.set_mesh(run.mesh), nn.logical_axis_rules(run.rules):
        for _ in range(count):
            batch = sharding.global_batch_from_host(next(iterator), run.batch_sharding)
            state, metrics = step_fn(state, batch, run.dropout_key)
            losses.append(float(metrics["loss"]))
    return state, losses


def test_tiny_trains_and_resumes_exactly_with_its_memory(trained):
    run, init, step_fn, workdir = trained
    fresh_iterator = functools.partial(
        pipeline.make_iterator, run.config, run.batch_sharding, split="train", shuffle=True
    )
    _, losses = _steps(run, step_fn, init(run.init_key), fresh_iterator(), STEPS)
    assert np.mean(losses[-2:]) < losses[0] - 0.1, losses  # the loss falls

    # The same run, checkpointed after SAVED steps and restored (state with its memory, data position) in a new
    # iterator: the same per-step losses, exactly.
    iterator = fresh_iterator()
    state, first = _steps(run, step_fn, init(run.init_key), iterator, SAVED)
    assert first == losses[:SAVED]
    carry = np.asarray(state.carry)
    assert carry.shape == (8, 2, 16, 128) and np.abs(carry).max() > 0
    manager = checkpoint.make_manager(str(workdir), run.config.checkpoint)
    checkpoint.save(manager, SAVED, state, iterator, run.config)
    manager.wait_until_finished()
    restored = checkpoint.restore(manager, SAVED, run.abstract_state, run.state_shardings, resumed := fresh_iterator())
    np.testing.assert_array_equal(np.asarray(restored.carry), carry)
    _, rest = _steps(run, step_fn, restored, resumed, STEPS - SAVED)
    assert rest == losses[SAVED:]

    # The memory matters: the restored state without it (zeros) gives another loss on the same batch.
    again = checkpoint.restore(manager, SAVED, run.abstract_state, run.state_shardings, other := fresh_iterator())
    manager.close()
    forgetful = again.replace(carry=jax.device_put(np.zeros(carry.shape, carry.dtype), run.state_shardings.carry))
    _, (loss,) = _steps(run, step_fn, forgetful, other, 1)
    assert loss != losses[SAVED]
