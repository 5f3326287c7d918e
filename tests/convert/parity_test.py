"""Parity with Hugging Face: random tiny HF models, imported by the CLI's code path (lmx.convert.hf.import_checkpoint,
read back by the reader `config.checkpoint.init_from` uses), give the same logits (1e-5 relative, float32, padded
batches), the same loss and the same gradient of every parameter (1e-4) as transformers' PyTorch models."""

import hf_tiny
import jax
import jax.numpy as jnp
import numpy as np

from lmx.convert import families, hf, lmx_files, tensors
from lmx.models import build_model
from lmx.models.transformer import unstack_scanned_params
from lmx.objectives import cross_entropy_terms

FAMILY = {"t5.1.0": "t5", "t5.1.1": "t5", "gpt2": "gpt2", "bert": "bert", "albert": "albert"}
LOGITS_RTOL, LOSS_RTOL = 1e-5, 1e-4


def batch_of(name: str) -> dict[str, np.ndarray]:
    """Two padded rows of the family's inputs, targets and loss weights (numpy, lmx feature names)."""
    if name.startswith("t5"):
        encoder = hf_tiny.padded_rows([10, 6], 10)
        decoder = hf_tiny.padded_rows([7, 5], 8, seed=2)  # decoder input = 0 then the targets, shifted right
        inputs, targets = np.concatenate([np.zeros((2, 1), int), decoder[:, :-1]], 1), decoder
        return {
            "encoder_input_tokens": encoder,
            "decoder_input_tokens": inputs,
            "targets": targets,
            "weights": (targets != 0).astype(np.float32),
        }
    if name == "gpt2":
        tokens = hf_tiny.padded_rows([12, 7], 12)
        targets = np.concatenate([tokens[:, 1:], np.zeros((2, 1), int)], 1)
        return {"decoder_input_tokens": tokens, "targets": targets, "weights": (targets != 0).astype(np.float32)}
    tokens = hf_tiny.padded_rows([12, 8], 12)
    types = ((np.arange(12)[None] >= np.array([[6], [4]])) & (tokens != 0)).astype(np.int64)
    rng = np.random.default_rng(3)
    masked = (rng.random(tokens.shape) < 0.4) & (tokens != 0)
    return {
        "encoder_input_tokens": tokens,
        "encoder_token_types": types,
        "targets": rng.integers(3, hf_tiny.VOCAB, tokens.shape),
        "weights": masked.astype(np.float32),
        "pair_labels": np.array([0, 1]),
    }


def hf_outputs(name, model, batch, torch) -> dict:
    """The HF model's logits (and pooled output, pair logits) on `batch`, as torch tensors."""
    t = {k: torch.from_numpy(np.asarray(v)) for k, v in batch.items()}
    if name.startswith("t5"):
        mask = (t["encoder_input_tokens"] != 0).long()
        out = model(
            input_ids=t["encoder_input_tokens"], attention_mask=mask, decoder_input_ids=t["decoder_input_tokens"]
        )
        return {"logits": out.logits}
    if name == "gpt2":
        tokens = t["decoder_input_tokens"]
        return {"logits": model(input_ids=tokens, attention_mask=(tokens != 0).long()).logits}
    inputs = dict(
        input_ids=t["encoder_input_tokens"],
        attention_mask=(t["encoder_input_tokens"] != 0).long(),
        token_type_ids=t["encoder_token_types"],
    )
    out = model(**inputs)
    pair = out.seq_relationship_logits if name == "bert" else out.sop_logits
    pooled = getattr(model, model.base_model_prefix)(**inputs).pooler_output
    return {"logits": out.prediction_logits, "pair_logits": pair, "pooled": pooled}


def lmx_loss(name, config, params, batch):
    """(the same loss as torch_loss, the model's outputs) of lmx on `batch`."""
    features = {k: jnp.asarray(v) for k, v in batch.items() if k.startswith(("encoder_", "decoder_"))}
    outputs = build_model(config.model).apply({"params": params}, features)
    weights = jnp.asarray(batch["weights"])
    xent = dict(z_loss=0.0, label_smoothing=0.0)
    terms = cross_entropy_terms(outputs["logits"], jnp.asarray(batch["targets"]), weights, "", **xent)
    loss = terms["cross_entropy"][0] / weights.sum()
    if "pair_labels" in batch:  # BERT's NSP / ALBERT's SOP loss, which trains the pooler
        labels = jnp.asarray(batch["pair_labels"])[:, None]
        pair = cross_entropy_terms(outputs["pair_logits"][:, None], labels, jnp.ones(labels.shape), "", **xent)
        loss = loss + pair["cross_entropy"][0] / labels.shape[0]
    return loss, outputs


_RESULTS = {}  # family name -> lmx_results (the `imported` fixture is per session)


def lmx_results(imported):
    """((loss, outputs), gradients) of lmx on the family's batch: one compilation serves both tests."""
    if imported.name not in _RESULTS:
        fn = jax.value_and_grad(
            lambda p: lmx_loss(imported.name, imported.config, p, batch_of(imported.name)), has_aux=True
        )
        _RESULTS[imported.name] = jax.jit(fn)(imported.params)
    return _RESULTS[imported.name]


def real_positions(name, batch) -> np.ndarray:
    """[B, L] positions whose logits both models define the same way (padding queries are masked differently)."""
    if name.startswith("t5"):
        return np.ones(batch["decoder_input_tokens"].shape, bool)  # decoder padding is causal-only in both
    tokens = batch.get("decoder_input_tokens", batch.get("encoder_input_tokens"))
    return tokens != 0


def max_relative(ours, theirs) -> float:
    return float(np.abs(np.asarray(ours) - np.asarray(theirs)).max() / np.abs(np.asarray(theirs)).max())


def test_logits_match(imported, torch):
    name, model = imported.name, imported.model
    batch = batch_of(name)
    with torch.no_grad():
        theirs = {k: v.numpy() for k, v in hf_outputs(name, model, batch, torch).items()}
    (_, ours), _ = lmx_results(imported)
    real = real_positions(name, batch)
    assert ours["logits"].shape == theirs["logits"].shape
    assert max_relative(ours["logits"][real], theirs["logits"][real]) < LOGITS_RTOL
    for extra in ("pooled", "pair_logits"):  # BERT/ALBERT: the pooler and the NSP/SOP head
        if extra in theirs:
            assert max_relative(ours[extra], theirs[extra]) < LOGITS_RTOL, extra


def test_unrolled_layout_holds_the_same_params(imported, tmp_path):
    """scan_layers=False: the same tensors, as layers_0, layers_1, ... (tests/models checks that both layouts
    compute the same)."""
    config = hf_tiny.lmx_config(imported.name, scan_layers=False)
    done = hf.import_checkpoint(str(imported.hf_dir), config, str(tmp_path / "lmx"))
    unrolled = lmx_files.read_params(done.step_dir, config.model)
    if not config.model.share_layers:
        assert any("/layers_1/" in path for path in tensors.flatten(unrolled))
    expected = unstack_scanned_params(imported.params)
    assert jax.tree.map(np.shape, unrolled) == jax.tree.map(np.shape, expected)
    jax.tree.map(np.testing.assert_array_equal, unrolled, expected)


def torch_loss(name, model, batch, torch):
    outputs = hf_outputs(name, model, batch, torch)
    logits = outputs["logits"]
    targets, weights = torch.from_numpy(batch["targets"]), torch.from_numpy(batch["weights"])
    xent = torch.nn.functional.cross_entropy(
        logits.reshape(-1, logits.shape[-1]), targets.reshape(-1), reduction="none"
    )
    loss = (xent * weights.reshape(-1)).sum() / weights.sum()
    if "pair_labels" in batch:
        loss = loss + torch.nn.functional.cross_entropy(outputs["pair_logits"], torch.from_numpy(batch["pair_labels"]))
    return loss


def test_loss_and_gradients_match(imported, torch):
    name, model, config = imported.name, imported.model, imported.config
    batch = batch_of(name)
    (loss, _), grads = lmx_results(imported)

    model.zero_grad()
    their_loss = torch_loss(name, model, batch, torch)
    their_loss.backward()
    their = float(their_loss.detach())
    assert abs(float(loss) - their) <= LOSS_RTOL * abs(their)
    # Their gradients, mapped by the converter's own table into lmx's layout (tied twins share one gradient).
    their_grads = {n: p.grad.numpy() for n, p in model.named_parameters(remove_duplicate=False) if p.grad is not None}
    family = families.FAMILIES[FAMILY[name]]
    mapped, _ = tensors.to_lmx(their_grads, config.model, family, family.export_architecture, jax.random.key(0))
    ours, theirs = tensors.flatten(grads), tensors.flatten(mapped)
    assert set(ours) == set(theirs)
    for path in ours:
        # 1e-4 of each parameter's largest gradient; the floor covers gradients that are zero up to rounding (an
        # attention key bias shifts every logit of a query alike, which the softmax ignores).
        scale = np.abs(theirs[path]).max()
        assert np.abs(np.asarray(ours[path]) - theirs[path]).max() <= LOSS_RTOL * scale + 1e-7, path
    assert any(np.abs(g).max() > 0 for g in theirs.values())
