"""Each objective's preprocessor chain as a seqio Task on the embedded corpus, through its feature converter.

These are the chains lmx.data.tasks registers, and the model features each objective hands the model.
"""

import functools

import numpy as np
import pretraining_text
import pytest
import seqio

from lmx.data import converters, language_modeling, masking, sentence_pairs, sources

TOKENIZE = [
    functools.partial(seqio.preprocessors.rekey, key_map={"targets": "text"}),
    functools.partial(seqio.preprocessors.tokenize, copy_pretokenized=False),
]
ENCODER = ["encoder_input_tokens", "encoder_target_tokens", "encoder_loss_weights", "encoder_token_types"]
PACKED_ENCODER = ["encoder_segment_ids", "encoder_positions"]
DECODER = ["decoder_input_tokens", "decoder_target_tokens", "decoder_loss_weights"]
PACKED_DECODER = ["decoder_segment_ids", "decoder_positions"]


def _chain(objective, ids, vocab):
    """(preprocessors, task lengths, converter, model features, Task output features) of an objective."""
    encoder = converters.encoder_task_lengths(64)
    if objective == "lm":
        steps = [*TOKENIZE, functools.partial(language_modeling.lm, eos_id=ids.eos)]
        converter = seqio.DecoderFeatureConverter(pack=True)
        return steps, {"targets": 64}, converter, DECODER + PACKED_DECODER, ("targets",)
    if objective in ("mlm", "rtd"):
        masker = (
            functools.partial(masking.mlm, ids=ids, word_starts=masking.sentencepiece_word_starts(vocab))
            if objective == "mlm"
            else functools.partial(masking.electra_mask, ids=ids)
        )
        steps = [*TOKENIZE, functools.partial(language_modeling.full_sentences, ids=ids), masker]
        converter = converters.EncoderOnlyFeatureConverter(pack=True)
        return steps, encoder, converter, ENCODER + PACKED_ENCODER, ("inputs", "targets")
    if objective in ("mlm_nsp", "mlm_sop"):
        task = objective.split("_")[1]
        steps = [
            functools.partial(sentence_pairs.sentence_pairs, ids=ids, task=task),
            functools.partial(masking.mlm, ids=ids),
        ]
        lengths = converters.encoder_task_lengths(64, with_pair_label=True)
        converter = converters.SentencePairFeatureConverter()
        return steps, lengths, converter, ENCODER + ["pair_label"], ("inputs", "targets")
    eos = seqio.preprocessors.append_eos_after_trim
    if objective == "prefix_lm":
        steps = [*TOKENIZE, language_modeling.prefix_lm, eos]
        lengths = {"inputs": 64, "targets": 64}
        features = ["encoder_input_tokens", "encoder_segment_ids", "encoder_positions", *DECODER, *PACKED_DECODER]
        return steps, lengths, seqio.EncDecFeatureConverter(pack=True), features, ("inputs", "targets")
    assert objective == "decoder_prefix_lm"
    steps = [*TOKENIZE, functools.partial(language_modeling.prefix_lm, decoder_only=True), eos]
    lengths = converters.prefix_lm_decoder_task_lengths(64)
    converter = converters.PrefixLMDecoderFeatureConverter(pack=True)
    features = DECODER + ["decoder_causal_attention"] + PACKED_DECODER
    return steps, lengths, converter, features, ("inputs", "targets")


@pytest.mark.parametrize("objective", ["lm", "mlm", "rtd", "mlm_nsp", "mlm_sop", "prefix_lm", "decoder_prefix_lm"])
def test_objective_through_seqio_task(objective, t5_vocab, data_config):
    ids = pretraining_text.t5_objective_ids(t5_vocab)
    steps, lengths, converter, features, outputs = _chain(objective, ids, t5_vocab)
    name = f"test_chain_{objective}"
    seqio.TaskRegistry.remove(name)
    seqio.TaskRegistry.add(
        name,
        source=sources.embedded_source(data_config),
        preprocessors=steps,
        output_features=pretraining_text.features(t5_vocab, outputs),
        shuffle_buffer_size=32,
    )
    ds = seqio.get_mixture_or_task(name).get_dataset(lengths, split="train", shuffle=True, seed=1, num_epochs=None)
    batch = next(converter(ds, lengths).batch(4).as_numpy_iterator())
    assert sorted(batch) == sorted(features)
    for key, value in batch.items():
        assert value.dtype == np.int32
        assert value.shape == ((4, 1) if key == "pair_label" else (4, 64)), key
    if "encoder_loss_weights" in batch:
        weights, targets = batch["encoder_loss_weights"], batch["encoder_target_tokens"]
        assert weights.sum() > 0 and not weights[np.isin(targets, ids.protected)].any()
        assert (batch["encoder_input_tokens"][weights == 0] == targets[weights == 0]).all()
    if "decoder_loss_weights" in batch:
        assert batch["decoder_loss_weights"].sum() > 0
