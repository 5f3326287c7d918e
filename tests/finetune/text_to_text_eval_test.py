"""Evaluating the text-to-text format: what the model generates is decoded, read back as a label and scored
(lmx.finetune.evaluation); a prefix-LM decoder's prompt is the decoder inputs of its row's prefix. Generation
itself is lmx.inference.decode's (tested there): here a stand-in returns fixed texts, so the scores have an
independent reference, the label counts of the validation file."""

import functools
import types

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from finetune_tiny import VOCAB_CACHE, tiny_config, write_sst2

from lmx import sharding, step
from lmx.data import vocab
from lmx.finetune import catalog, downstream, evaluation, session
from lmx.inference import decode


@pytest.fixture(autouse=True)
def cache_dir(monkeypatch):
    monkeypatch.setenv("LMX_CACHE_DIR", VOCAB_CACHE)


def _validation_labels(data_dir) -> list[int]:
    lines = (data_dir / "glue" / "sst2" / "test.tsv").read_text().splitlines()[1:]
    return [int(line.split("\t")[1]) for line in lines]


def test_generated_texts_are_read_back_as_labels_and_scored(tmp_path, monkeypatch):
    data_dir = write_sst2(tmp_path / "data")
    config = tiny_config("encoder_decoder", fmt="text_to_text")
    config.model.vocab_size = 2176  # t5_tiny's vocabulary of the embedded corpus
    config.finetune.data_dir, config.data.targets_length = str(data_dir), 4
    config.train.batch_size = 16  # 24 validation rows: one full batch and one padded with 8 empty rows
    fine = session.FineTuning.prepare(config)
    model, vocabulary = fine.build_model(), vocab.get_vocabulary(config.data)
    init = functools.partial(step.init_params, model=model, init_batch=step.init_batch(fine.feature_lengths))
    params = jax.device_get(nn.unbox(jax.jit(init)(jax.random.key(0))))
    mesh = sharding.make_mesh(config.mesh)
    rules = sharding.rules_of(config)
    replicated = jax.tree.map(lambda _: sharding.replicated(mesh), params)
    fine.attach_evaluator(vocabulary, model, (mesh, rules, sharding.batch_sharding(mesh, rules), replicated))

    answer = {}

    def stand_in(model, params, inputs, *, max_new_tokens, eos_id, bidirectional_prompt=False):
        ids = vocabulary.encode(answer["text"])[:max_new_tokens]
        rows = inputs["encoder_input_tokens"].shape[0]
        tokens = jnp.zeros((rows, max_new_tokens), jnp.int32).at[:, : len(ids)].set(jnp.asarray(ids, jnp.int32))
        return types.SimpleNamespace(tokens=tokens, lengths=jnp.full((rows,), len(ids), jnp.int32))

    monkeypatch.setattr(decode, "generate", stand_in)
    labels = _validation_labels(data_dir)
    for text, accuracy in (("positive", np.mean(labels)), ("maybe", 0.0)):
        answer["text"] = text
        fine.evaluator._jitted.pop("generate", None)  # retrace the stand-in with this answer
        scores = fine.evaluate(params)
        assert scores["accuracy"] == pytest.approx(accuracy), text
        assert scores["examples"] == len(labels) == 24
        assert 0 < scores["loss"] < 20  # the teacher-forced target cross-entropy of an untrained model


def test_a_prefix_lm_prompt_is_its_rows_decoder_inputs_up_to_the_targets(tmp_path):
    data_dir = write_sst2(tmp_path / "data")
    config = tiny_config("encoder_decoder", fmt="text_to_text")
    vocabulary = vocab.get_vocabulary(config.data)
    task = catalog.get_task("sst2")
    rows = downstream.text_to_text_features(
        task,
        vocabulary,
        "validation",
        source="local",
        data_dir=str(data_dir),
        inputs_length=32,
        targets_length=4,
        decoder_only=True,
    )
    batch = next(rows.batch(24).as_numpy_iterator())
    prompt = jax.device_get(evaluation.decoder_only_prompt(batch, 32))
    eos = vocab.special_ids(vocabulary).eos
    sentences = [line.split("\t")[0] for line in (data_dir / "glue/sst2/test.tsv").read_text().splitlines()[1:]]
    labels = _validation_labels(data_dir)
    for i, sentence in enumerate(sentences):
        expected = [0, *vocabulary.encode(f"sst2 sentence: {sentence}"), eos]
        assert prompt["prompt_lengths"][i] == len(expected)
        assert list(prompt["prompt_tokens"][i]) == expected + [0] * (33 - len(expected))
        # The model predicts the first target token right after the prompt: its label's first piece.
        first_piece = vocabulary.encode(task.label_names[labels[i]])[0]
        assert batch["decoder_target_tokens"][i][len(expected) - 1] == first_piece
