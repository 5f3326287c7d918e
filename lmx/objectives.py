"""The loss side of the pretraining objectives: one `Objective` record per objective, keyed like the data side.

`OBJECTIVES[name]` (here) and `lmx.data.tasks.DATA_OBJECTIVES[name]` (features, lengths, converter) describe the same
objective; `check(name, model_name)` refuses a name missing from either table or a model family it cannot train.

Losses are *sums* with their own denominators, so gradient accumulation and data parallelism divide by counts of
the whole global batch, never a microbatch's:
  terms(outputs, batch, train_config) -> {term: (sum over this (micro)batch, denominator name)}
  denominators(batch) -> {denominator name: count}   from the batch alone (target tokens, masked tokens, rows)
The training loss is sum_t coefficient_t * sum_t / denominator_t over the global batch, with the coefficients of
`coefficients(train_config)`; every term is also a metric (sum / denominator). Auxiliary outputs the model returns
(MoE routers: one value per layer, each a mean over the layer's tokens) are terms over the denominator "microbatches"
(one per call): their total over layers (AUX_OUTPUTS: losses summed, metrics averaged) and each layer's value.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping

import jax
import jax.numpy as jnp
import ml_collections

Array = jax.Array
Terms = dict[str, tuple[Array, str]]

# The denominator of per-call auxiliary losses: 1 per model call, so their metric is the mean over microbatches.
PER_CALL = "microbatches"


def cross_entropy_terms(
    logits: Array,
    targets: Array,
    weights: Array,
    denominator: str,
    *,
    z_loss: float,
    label_smoothing: float,
    prefix: str = "",
) -> Terms:
    """Weighted sums of token cross-entropy, smoothed cross-entropy, log(Z)^2 and accuracy.

    logits: [B, L, V] (any float dtype; computed in float32), targets: [B, L] int, weights: [B, L].
    z-loss (PaLM, section 5): z_loss * log(Z)^2 keeps the softmax normaliser near 1 for stability; the term is
    log(Z)^2 itself, its coefficient config.train.z_loss. Label smoothing: (1 - s) on the label, s spread
    uniformly over the vocabulary.
    """
    del z_loss  # applied as the term's coefficient (coefficients())
    logits = logits.astype(jnp.float32)
    weights = weights.astype(jnp.float32)
    log_z = jax.nn.logsumexp(logits, axis=-1)  # [B, L]
    log_probs = logits - log_z[..., None]  # [B, L, V]
    xent = -jnp.take_along_axis(log_probs, targets[..., None], axis=-1)[..., 0]  # [B, L]
    correct = (jnp.argmax(logits, axis=-1) == targets).astype(jnp.float32)
    terms = {
        f"{prefix}cross_entropy": (jnp.sum(xent * weights), denominator),
        f"{prefix}z_loss": (jnp.sum(jnp.square(log_z) * weights), denominator),
        f"{prefix}accuracy": (jnp.sum(correct * weights), denominator),
    }
    if label_smoothing > 0:
        smoothed = (1.0 - label_smoothing) * xent - label_smoothing * jnp.mean(log_probs, axis=-1)
        terms[f"{prefix}smoothed_cross_entropy"] = (jnp.sum(smoothed * weights), denominator)
    return terms


def token_loss_coefficients(train_config, prefix: str = "") -> dict[str, float]:
    """The cross-entropy (smoothed if configured) and the z-loss with its weight."""
    xent = "smoothed_cross_entropy" if train_config.label_smoothing > 0 else "cross_entropy"
    return {f"{prefix}{xent}": 1.0, f"{prefix}z_loss": train_config.z_loss}


def _target_stream(stream: str) -> Callable:
    """Terms of a next-token / masked-token objective whose targets are `<stream>_target_tokens`."""

    def terms(outputs: Mapping[str, Array], batch: Mapping[str, Array], train_config) -> Terms:
        return cross_entropy_terms(
            outputs["logits"],
            batch[f"{stream}_target_tokens"],
            batch[f"{stream}_loss_weights"],
            "target_tokens",
            z_loss=train_config.z_loss,
            label_smoothing=train_config.label_smoothing,
        )

    return terms


def _target_tokens(stream: str) -> Callable:
    def denominators(batch: Mapping[str, Array]) -> dict[str, Array]:
        return {"target_tokens": jnp.sum(batch[f"{stream}_loss_weights"].astype(jnp.float32))}

    return denominators


def _pair_terms(outputs: Mapping[str, Array], batch: Mapping[str, Array], train_config) -> Terms:
    """BERT's MLM terms plus the sentence-pair head's: NSP (BERT section 3.1, "Task #2") or SOP (ALBERT section 3.2),
    a two-class cross-entropy of the pooled [CLS] output per row ("rows")."""
    terms = _target_stream("encoder")(outputs, batch, train_config)
    logits = outputs["pair_logits"].astype(jnp.float32)  # [B, 2]
    labels = batch["pair_label"][:, 0]  # [B]
    log_probs = jax.nn.log_softmax(logits, axis=-1)
    xent = -jnp.take_along_axis(log_probs, labels[:, None], axis=-1)[:, 0]  # [B]
    correct = (jnp.argmax(logits, axis=-1) == labels).astype(jnp.float32)
    terms["pair_cross_entropy"] = (jnp.sum(xent), "rows")
    terms["pair_accuracy"] = (jnp.sum(correct), "rows")
    return terms


def _pair_denominators(batch: Mapping[str, Array]) -> dict[str, Array]:
    return {**_target_tokens("encoder")(batch), "rows": jnp.asarray(batch["pair_label"].shape[0], jnp.float32)}


def _pair_coefficients(train_config) -> dict[str, float]:
    """BERT's pre-training loss: the mean MLM likelihood plus the mean NSP/SOP likelihood (appendix A.2)."""
    return {**token_loss_coefficients(train_config), "pair_cross_entropy": 1.0}


def _rtd_terms(outputs: Mapping[str, Array], batch: Mapping[str, Array], train_config) -> Terms:
    """ELECTRA (Clark et al. 2020, section 2; lmx.models.electra): the generator's MLM terms over the masked tokens
    ("target_tokens") and the discriminator's over every non-pad token ("tokens").

    Discriminator loss: binary cross-entropy of its logit z against replaced = y, softplus(z) - y z (= -y log
    sigmoid(z) - (1 - y) log(1 - sigmoid(z))). Accuracy and the replaced fraction are over all tokens; precision
    (of the tokens it calls replaced, how many were) and recall (of the replaced tokens, how many it caught) are
    ratios of one call, so their metric is the mean over (micro)batches (0 when a batch has nothing to divide by).
    """
    terms = cross_entropy_terms(
        outputs["logits"],
        batch["encoder_target_tokens"],
        batch["encoder_loss_weights"],
        "target_tokens",
        z_loss=train_config.z_loss,
        label_smoothing=train_config.label_smoothing,
        prefix="generator_",
    )
    logits = outputs["discriminator_logits"].astype(jnp.float32)  # [B, L]
    replaced = outputs["replaced"].astype(jnp.float32)  # [B, L]
    real = (batch["encoder_input_tokens"] != 0).astype(jnp.float32)  # [B, L] non-pad tokens
    predicted = (logits > 0).astype(jnp.float32)
    bce = jax.nn.softplus(logits) - replaced * logits
    true_positives = jnp.sum(predicted * replaced * real)
    terms.update(
        discriminator_loss=(jnp.sum(bce * real), "tokens"),
        discriminator_accuracy=(jnp.sum((predicted == replaced) * real), "tokens"),
        replaced_fraction=(jnp.sum(replaced * real), "tokens"),
        discriminator_precision=(true_positives / jnp.maximum(jnp.sum(predicted * real), 1.0), PER_CALL),
        discriminator_recall=(true_positives / jnp.maximum(jnp.sum(replaced * real), 1.0), PER_CALL),
    )
    return terms


def _rtd_denominators(batch: Mapping[str, Array]) -> dict[str, Array]:
    tokens = jnp.sum((batch["encoder_input_tokens"] != 0).astype(jnp.float32))
    return {**_target_tokens("encoder")(batch), "tokens": tokens}


def _rtd_coefficients(train_config) -> dict[str, float]:
    """L_MLM + lambda L_Disc (section 2; lambda = 50, config.train.discriminator_weight)."""
    return {
        **token_loss_coefficients(train_config, "generator_"),
        "discriminator_loss": train_config.discriminator_weight,
    }


def _classify_terms(outputs: Mapping[str, Array], batch: Mapping[str, Array], train_config) -> Terms:
    """Fine-tuning a classification head (lmx.models.heads): one label per row, each row weighs 1 ("rows").

    Classes (logits [B, C], C > 1): cross-entropy of the label (label-smoothed if configured) and accuracy, from
    cross_entropy_terms on a length-1 sequence. Regression (logits [B, 1], STS-B): the squared error of the score
    ("mse"); the float labels are the targets.
    """
    logits = outputs["logits"].astype(jnp.float32)  # [B, C]
    labels = batch["labels"][:, 0]  # [B] (rows carry their label as [B, 1], laid out like every batch feature)
    rows = jnp.ones(labels.shape[:1] + (1,), jnp.float32)  # [B, 1]
    if logits.shape[-1] == 1:
        error = logits[:, 0] - labels.astype(jnp.float32)
        return {"mse": (jnp.sum(jnp.square(error)), "rows")}
    terms = cross_entropy_terms(
        logits[:, None, :],
        labels[:, None].astype(jnp.int32),
        rows,
        "rows",
        z_loss=0.0,
        label_smoothing=train_config.label_smoothing,
    )
    del terms["z_loss"]  # a softmax over a few classes needs no normaliser penalty
    return terms


def _rows(batch: Mapping[str, Array]) -> dict[str, Array]:
    return {"rows": jnp.asarray(batch["labels"].shape[0], jnp.float32)}


def _classify_coefficients(train_config) -> dict[str, float]:
    """The mean cross-entropy over rows (smoothed if configured), or the mean squared error of a regression."""
    xent = "smoothed_cross_entropy" if train_config.label_smoothing > 0 else "cross_entropy"
    return {xent: 1.0, "mse": 1.0}


@dataclasses.dataclass(frozen=True)
class Objective:
    """The loss side of one objective (its data side: lmx.data.tasks.DATA_OBJECTIVES[name])."""

    families: tuple[str, ...]  # config.model.name values it can train
    terms: Callable[[Mapping[str, Array], Mapping[str, Array], ml_collections.ConfigDict], Terms]
    denominators: Callable[[Mapping[str, Array]], dict[str, Array]]
    coefficients: Callable[[ml_collections.ConfigDict], dict[str, float]]
    main_metric: str = "cross_entropy"  # the eval metric whose exp() is the perplexity


OBJECTIVES: dict[str, Objective] = {
    # T5: inputs with sentinels -> the dropped spans.
    "span_corruption": Objective(
        ("encoder_decoder",), _target_stream("decoder"), _target_tokens("decoder"), token_loss_coefficients
    ),
    # GPT: next-token prediction over packed chunks of the corpus.
    "lm": Objective(("decoder_only",), _target_stream("decoder"), _target_tokens("decoder"), token_loss_coefficients),
    # BERT: masked tokens predicted from both sides; loss on the selected tokens only.
    "mlm": Objective(("encoder_only",), _target_stream("encoder"), _target_tokens("encoder"), token_loss_coefficients),
    # BERT: MLM + next-sentence prediction on [CLS] A [SEP] B [SEP] pairs (the model's pair_logits head).
    "mlm_nsp": Objective(("encoder_only",), _pair_terms, _pair_denominators, _pair_coefficients),
    # ALBERT: MLM + sentence-order prediction (the same head, on in-order or swapped consecutive segments).
    "mlm_sop": Objective(("encoder_only",), _pair_terms, _pair_denominators, _pair_coefficients),
    # T5's prefix LM: the prefix of a chunk to the encoder, its continuation the decoder's target.
    "prefix_lm": Objective(
        ("encoder_decoder",), _target_stream("decoder"), _target_tokens("decoder"), token_loss_coefficients
    ),
    # The decoder-only prefix LM: bidirectional attention over the prefix, loss on the continuation only.
    "decoder_prefix_lm": Objective(
        ("decoder_only",), _target_stream("decoder"), _target_tokens("decoder"), token_loss_coefficients
    ),
    # ELECTRA: generator MLM + 50 x replaced-token detection by the discriminator.
    "rtd": Objective(
        ("electra",), _rtd_terms, _rtd_denominators, _rtd_coefficients, main_metric="generator_cross_entropy"
    ),
    # XLNet: the query stream's cross-entropy at the predicted tokens (the last 1/K of each factorization order).
    "plm": Objective(("xlnet",), _target_stream("encoder"), _target_tokens("encoder"), token_loss_coefficients),
}

# The objectives of fine-tuning (lmx.finetune), keyed by config.finetune.format; their data come from the downstream
# tasks (lmx.finetune.downstream), not from a pretraining task, so config.data.objective never names them.
FINETUNE_OBJECTIVES: dict[str, Objective] = {
    # A classification or regression head on a pretrained body (lmx.models.heads).
    "classify": Objective(
        ("encoder_only", "electra", "encoder_decoder", "xlnet"), _classify_terms, _rows, _classify_coefficients
    ),
    # T5's text-to-text format: the target text's cross-entropy, by an encoder-decoder or a prefix-LM decoder.
    "text_to_text": Objective(
        ("encoder_decoder", "decoder_only"),
        _target_stream("decoder"),
        _target_tokens("decoder"),
        token_loss_coefficients,
    ),
}


def check(name: str, model_name: str) -> Objective:
    """The objective `name`, refusing an unknown one or a model family it cannot train (ValueError, one line)."""
    from lmx.data import tasks  # the data side; imported here so the loss side never needs TensorFlow

    if name not in OBJECTIVES or name not in tasks.DATA_OBJECTIVES:
        known = sorted(set(OBJECTIVES) & set(tasks.DATA_OBJECTIVES))
        raise ValueError(f"config.data.objective={name!r} is unknown; choose one of {known}")
    objective = OBJECTIVES[name]
    if model_name not in objective.families:
        fits = sorted(n for n, o in OBJECTIVES.items() if model_name in o.families)
        raise ValueError(
            f"config.data.objective={name!r} trains {list(objective.families)}, not config.model.name="
            f"{model_name!r}; objectives for {model_name!r}: {fits}"
        )
    return objective


@dataclasses.dataclass(frozen=True)
class AuxOutput:
    """How one auxiliary output of the model ({name: [layers]}) becomes terms (`aux_terms`)."""

    # A loss: its total is the sum over layers, weighted by loss_weight(config.model) in the training loss.
    # None: a metric, whose total is the mean over layers.
    loss_weight: Callable[[ml_collections.ConfigDict], float] | None = None


AUX_OUTPUTS: dict[str, AuxOutput] = {
    # MoE (lmx.models.moe). Switch adds every MoE layer's load-balancing loss to the training loss (its alpha is per
    # layer), as ST-MoE does with the router z-loss; the routing statistics are averaged over the layers.
    "moe_aux_loss": AuxOutput(lambda m: m.moe.aux_loss_weight),
    "moe_z_loss": AuxOutput(lambda m: m.moe.z_loss_weight),
    "moe_drop_fraction": AuxOutput(),
    "moe_expert_load_max_over_mean": AuxOutput(),
    "moe_router_entropy": AuxOutput(),
}


def aux_layer_names(model_config) -> tuple[str, ...]:
    """The names of the layers whose values the model's aux arrays hold, in their order (MoE layers only so far)."""
    from lmx.models.moe import moe_layer_names

    return moe_layer_names(model_config)


def aux_terms(aux: Mapping[str, Array], layer_names: tuple[str, ...]) -> Terms:
    """Auxiliary outputs of the model ({name: [layers]}) as per-call terms: `name` their total over layers (sum of
    a loss, mean of a metric: AUX_OUTPUTS) and `name/<layer>` each layer's value (layer_names: aux_layer_names)."""
    terms: Terms = {}
    for name, values in aux.items():
        if name not in AUX_OUTPUTS:
            raise ValueError(f"the model returns aux output {name!r}, which lmx.objectives.AUX_OUTPUTS does not list")
        if values.shape != (len(layer_names),):
            raise ValueError(f"aux output {name!r} has shape {values.shape}, not one value per layer of {layer_names}")
        values = values.astype(jnp.float32)
        total = jnp.sum(values) if AUX_OUTPUTS[name].loss_weight is not None else jnp.mean(values)
        terms[name] = (total, PER_CALL)
        terms.update({f"{name}/{layer}": (values[i], PER_CALL) for i, layer in enumerate(layer_names)})
    return terms


def aux_coefficients(model_config) -> dict[str, float]:
    """The weights of the auxiliary losses in the training loss (MoE load balancing and router z-loss); the
    per-layer values and the metrics are logged only."""
    if model_config.moe.num_experts == 0:
        return {}
    return {name: out.loss_weight(model_config) for name, out in AUX_OUTPUTS.items() if out.loss_weight is not None}


def all_terms(
    objective: Objective, model_config, train_config, outputs: Mapping[str, Array], batch: Mapping[str, Array]
) -> Terms:
    """The objective's terms of one (micro)batch and the model's auxiliary ones."""
    aux = outputs.get("aux", {})
    layer_names = aux_layer_names(model_config) if aux else ()
    return {**objective.terms(outputs, batch, train_config), **aux_terms(aux, layer_names)}


def all_coefficients(objective: Objective, model_config, train_config) -> dict[str, float]:
    """term -> its weight in the training loss (terms not named are metrics only)."""
    return {**objective.coefficients(train_config), **aux_coefficients(model_config)}


def training_loss(means: Mapping[str, Array], coefficients: Mapping[str, float]) -> Array:
    """sum_t coefficient_t * mean_t over the terms present (a term absent from this model contributes nothing)."""
    return sum(
        (coefficient * means[name] for name, coefficient in coefficients.items() if coefficient and name in means),
        jnp.zeros((), jnp.float32),
    )
