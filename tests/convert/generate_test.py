"""Greedy decoding equals Hugging Face `generate` on the same imported random models (T5.1.0, T5.1.1, GPT-2):
lmx's KV-cached decoder on the weights lmx.convert imported, against transformers' own cached greedy search."""

import hf_tiny
import jax.numpy as jnp
import numpy as np
import pytest

from lmx.inference import decode
from lmx.models import build_model

NEW_TOKENS, EOS = 10, 1


def test_greedy_decoding_equals_hugging_face_generate(imported, torch):
    model = build_model(imported.config.model)
    if imported.name in ("bert", "albert"):  # encoder-only: nothing to generate with, and lmx says so
        with pytest.raises(ValueError, match="no decoder"):
            decode.is_encoder_decoder(model)
        return
    lengths = [9, 4, 6]
    prompts = hf_tiny.padded_rows(lengths, 9, seed=5, low=2)
    if imported.name.startswith("t5"):
        inputs = {"encoder_input_tokens": jnp.asarray(prompts)}
    else:
        inputs = {"prompt_tokens": jnp.asarray(prompts), "prompt_lengths": jnp.asarray(lengths)}
    ours = decode.generate(model, imported.params, inputs, max_new_tokens=NEW_TOKENS, eos_id=EOS)
    for row, n in enumerate(lengths):
        prompt = torch.from_numpy(prompts[row : row + 1, :n])
        common = dict(max_new_tokens=NEW_TOKENS, do_sample=False, num_beams=1, eos_token_id=EOS, pad_token_id=0)
        with torch.no_grad():
            if imported.name.startswith("t5"):
                out = imported.model.generate(input_ids=prompt, decoder_start_token_id=0, **common)[0, 1:]
            else:
                out = imported.model.generate(input_ids=prompt, attention_mask=torch.ones_like(prompt), **common)[0, n:]
        theirs = out.numpy().tolist()
        if EOS in theirs:  # HF keeps the EOS and pads after it; lmx records neither
            theirs = theirs[: theirs.index(EOS)]
        mine = np.asarray(ours.tokens[row, : int(ours.lengths[row])]).tolist()
        assert mine == theirs, (imported.name, row)
        assert bool(ours.finished[row]) == (len(theirs) < NEW_TOKENS)
