"""Head-only restore (config.checkpoint.init_from into a classifier): the body's parameters are read unchanged
from a pretraining checkpoint of each family written by lmx's checkpoint code, the head keeps its fresh
initialisation, and any other mismatch is one line naming the parameter."""

import hashlib
import re

import flax.linen as nn
import jax
import numpy as np
import pytest
from finetune_tiny import FAMILIES, flat, pretraining_params, tiny_config, write_checkpoint

from lmx import checkpoint, step
from lmx.finetune import session
from lmx.models import heads

# What each classifier reads from the pretraining tree: every parameter not under these prefixes is dropped.
UNUSED = {
    "encoder_only": ("mlm_transform/", "mlm_norm/", "pair_classifier/"),
    "electra": ("generator/", "discriminator/rtd_transform/", "discriminator/rtd_output/"),
    "encoder_decoder": ("decoder/",),
    "xlnet": (),
}


def _classifier_params(config, seed: int):
    fine = session.FineTuning.prepare(config)
    model = fine.build_model()
    # Eagerly, op by op: for these tiny models faster than compiling the init.
    params = step.init_params(jax.random.key(seed), model=model, init_batch=step.init_batch(fine.feature_lengths))
    return jax.device_get(nn.unbox(params))


def _single_device(tree):
    device = jax.sharding.SingleDeviceSharding(jax.devices()[0])
    return jax.tree.map(lambda _: device, tree)


@pytest.mark.parametrize("family", FAMILIES)
def test_init_from_reads_the_body_and_leaves_the_head_fresh(family, tmp_path):
    config = tiny_config(family)
    pretrained = pretraining_params(config, seed=1)
    step_dir = write_checkpoint(tmp_path / "pretrain", config, pretrained)
    fresh = _classifier_params(config, seed=2)

    checkpoint.check_init_from(step_dir, config.model)  # same architecture: accepted
    session.check_family(step_dir, config.model.name)
    restored = flat(checkpoint.restore_init_from(step_dir, fresh, _single_device(fresh), fresh=(heads.HEAD,)))
    pretrained, fresh = flat(pretrained), flat(fresh)

    head = {p for p in restored if p.startswith(f"{heads.HEAD}/")}
    assert head and {p.split("/")[1] for p in head} <= {"hidden", "output"}
    for path in head:  # fresh: N(0, 0.02^2) kernels, zero biases, untouched by the checkpoint
        np.testing.assert_array_equal(restored[path], fresh[path])
        if path.endswith("bias"):
            assert not restored[path].any()
        else:
            assert 0.01 < restored[path].std() < 0.03, path
    body = set(restored) - head
    unused = {p for p in pretrained if p.startswith(UNUSED[family])}
    assert body == set(pretrained) - unused  # every other pretraining parameter, nothing else
    for path in body:
        np.testing.assert_array_equal(restored[path], pretrained[path], err_msg=path)
        assert not np.array_equal(restored[path], fresh[path]) or not fresh[path].any() or path.endswith("scale")


@pytest.mark.parametrize(
    "saved, model, message",
    [
        (  # the checkpoint's MLP is wider than the model's
            {},
            {"mlp_dim": 48},
            r"holds parameter encoder/layers_0/mlp/wi/bias as \[64\], the model as \[48\]",
        ),
        (  # the model has token-type embeddings the checkpoint lacks
            {"type_vocab_size": 0},
            {},
            r"has no parameter embedder/token_type_embedder/embedding \[2, 32\], which the model reads from it",
        ),
        (  # the checkpoint has biases the model does not
            {},
            {"use_bias": False},
            r"holds parameter encoder/layers_0/mlp/wi/bias \[64\], which the model does not have",
        ),
    ],
)
def test_a_body_mismatch_names_the_parameter(tmp_path, saved, model, message):
    config = tiny_config("encoder_only")  # BERT: biases, 2 token types
    config.model.update(saved)
    step_dir = write_checkpoint(tmp_path / "pretrain", config, pretraining_params(config))
    other = tiny_config("encoder_only")
    other.model.update(model)
    fresh = _classifier_params(other, seed=0)
    with pytest.raises(ValueError, match=message) as error:
        checkpoint.restore_init_from(step_dir, fresh, _single_device(fresh), fresh=(heads.HEAD,))
    assert "\n" not in str(error.value)
    assert f"config.checkpoint.init_from={step_dir}" in str(error.value)


def test_a_checkpoint_of_another_family_is_refused_before_anything_is_built(tmp_path):
    t5 = tiny_config("encoder_decoder")
    step_dir = write_checkpoint(tmp_path / "t5", t5, pretraining_params(t5))
    config = tiny_config("encoder_only")
    config.checkpoint.init_from = str(tmp_path / "t5")  # a workdir: its latest step
    with pytest.raises(ValueError, match=r"is a checkpoint of a 'encoder_decoder' model but config.model.name="):
        session.validate(config)
    assert checkpoint.resolve_init_from(str(tmp_path / "t5")) == step_dir


def test_a_checkpoint_of_another_vocabulary_is_refused(tmp_path, monkeypatch):
    monkeypatch.setenv("LMX_CACHE_DIR", str(tmp_path / "cache"))
    pretrain = tiny_config("encoder_only")
    pretrain.data.corpus, pretrain.data.text_files = "text_files", "books/*.txt"
    step_dir = write_checkpoint(tmp_path / "pretrain", pretrain, pretraining_params(pretrain))
    config = tiny_config("encoder_only")  # the embedded corpus's vocabulary
    config.checkpoint.init_from = step_dir
    digest = hashlib.sha256(b"books/*.txt").hexdigest()[:12]
    cached = f"{tmp_path}/cache/vocab/text_files-{digest}-wordpiece-uncased-2000.txt"  # lmx.data.vocab's cache
    with pytest.raises(ValueError, match=re.escape(f"this run's vocabulary file is '{tmp_path}/cache/vocab/embedded-")):
        session.validate(config)
    with pytest.raises(ValueError, match=re.escape(f"was pretrained with '{cached}': its token ids would name other")):
        session.validate(config)
    config.data.vocab_path = cached  # the pretraining run's file named outright: the same vocabulary
    session.validate(config)
