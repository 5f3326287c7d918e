"""Special ids of a vocabulary (pad, eos, unk, bos, cls, mask, sentinels) and the errors of vocabulary files.

Every vocabulary kind resolves its special ids the same way: each role's token is the one named in
`config.data.special_tokens.<role>`, or, when that is "", the kind's convention (CONVENTIONS; SentencePiece models
name their own eos/unk/bos ids). The pad id is always 0, because seqio pads with 0 and derives loss weights from
`id != 0` (seqio.non_padding_position) whatever the vocabulary says. Sentinels are T5's extra ids on top of the
vocabulary: sentinel k is vocab_size - 1 - k.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping

from absl import logging

from lmx.config_lib import ConfigError

# config.data.vocab_kind -> what its vocabulary file is.
KINDS = {
    "unigram": "SentencePiece unigram model (.model); T5's vocabulary",
    "bpe": "SentencePiece BPE model (.model)",
    "wordpiece": "BERT's WordPiece vocab.txt",
    "byte_bpe": "GPT-2's byte-level BPE: a directory of vocab.json + merges.txt",
}
ROLES = ("eos", "unk", "bos", "cls", "mask")  # the roles config.data.special_tokens names
PAD_ID = 0  # seqio's padding id

# Each kind's token of each role (None: the kind has none) and of padding, which must be id 0 when present.
# SentencePiece kinds take pad/eos/unk/bos from the model file itself (lmx.data.spm_vocab.conventions).
CONVENTIONS: dict[str, dict[str, str | None]] = {
    # BERT's vocab.txt: [PAD] 0; [SEP] ends each segment, so it is BERT's eos.
    "wordpiece": {"pad": "[PAD]", "eos": "[SEP]", "unk": "[UNK]", "bos": None, "cls": "[CLS]", "mask": "[MASK]"},
    # GPT-2's vocab.json has only <|endoftext|> (its bos and eos); <pad>, <cls>, <mask> exist in the byte-level
    # BPE vocabularies lmx trains (ids 0, 2, 3).
    "byte_bpe": {
        "pad": "<pad>",
        "eos": "<|endoftext|>",
        "unk": None,
        "bos": "<|endoftext|>",
        "cls": "<cls>",
        "mask": "<mask>",
    },
}
REQUIRED = {"wordpiece": ("eos", "unk"), "byte_bpe": ("eos",), "unigram": ("eos",), "bpe": ("eos",)}


class VocabularyError(ConfigError):
    """A vocabulary file or corpus that cannot make a vocabulary; the message names the path and what was expected."""


class VocabularyFileNotFound(FileNotFoundError):
    """A vocabulary file that does not exist."""


@dataclasses.dataclass(frozen=True)
class SpecialIds:
    """The ids of a vocabulary's special roles; None where the vocabulary has no such token."""

    pad: int  # always 0 (seqio pads with 0); in GPT-2's own vocabulary id 0 is also the token "!"
    eos: int | None  # end of sequence (T5 </s>, GPT-2 <|endoftext|>); BERT's [SEP]
    unk: int | None  # unknown piece; None where every text is representable (byte-level BPE)
    bos: int | None  # beginning of sequence (GPT-2 <|endoftext|>); None in T5 and BERT
    cls: int | None  # BERT's [CLS], the pooled position
    mask: int | None  # BERT's [MASK], the masked-LM replacement token
    sentinels: tuple[int, ...]  # sentinel k (T5's <extra_id_k>) is sentinels[k] = vocab_size - 1 - k


class SpecialIdsOfVocabulary:
    """seqio.Vocabulary's eos/unk/bos ids read from the vocabulary's `special` (SpecialIds). Listed before
    seqio's class among a vocabulary's bases, so these properties are the ones seqio calls."""

    special: SpecialIds

    @property
    def eos_id(self) -> int | None:
        return self.special.eos

    @property
    def unk_id(self) -> int | None:
        return self.special.unk

    @property
    def bos_id(self) -> int | None:
        return self.special.bos


def resolve(
    kind: str,
    token_ids: Mapping[str, int],
    token_names: Mapping[str, str],
    conventions: Mapping[str, str | None],
    base_size: int,
    extra_ids: int,
    path: str,
) -> SpecialIds:
    """SpecialIds of a vocabulary whose tokens are `token_ids`, with `base_size` ids before `extra_ids` sentinels.

    token_names: role -> token named by the config ("" = the convention). conventions: role -> the kind's token
    (None = none). A named token missing from the vocabulary, a required role left without a token, or a pad token
    away from id 0 raises VocabularyError.
    """
    ids: dict[str, int | None] = {}
    for role in ROLES:
        named = token_names.get(role, "")
        if named:
            if named not in token_ids:
                raise VocabularyError(
                    f"config.data.special_tokens.{role}={named!r} is not a token of {path}; name one of its tokens, "
                    f"or '' for the {kind} convention ({conventions.get(role)!r})"
                )
            ids[role] = token_ids[named]
        else:
            token = conventions.get(role)
            ids[role] = token_ids.get(token) if token is not None else None
        if ids[role] is None and role in REQUIRED[kind]:
            raise VocabularyError(
                f"{path} has no {role} token ({conventions.get(role)!r} by the {kind} convention); expected a {kind} "
                f"vocabulary holding it, or name its token with config.data.special_tokens.{role}"
            )
    pad_token = conventions.get("pad")
    if pad_token is not None and pad_token in token_ids and token_ids[pad_token] != PAD_ID:
        raise VocabularyError(
            f"{path} has its pad token {pad_token!r} at id {token_ids[pad_token]}, but seqio pads with id {PAD_ID}; "
            f"expected a vocabulary with {pad_token!r} first"
        )
    if pad_token is None or pad_token not in token_ids:
        token_0 = next((token for token, i in token_ids.items() if i == PAD_ID), None)
        logging.warning("%s has no pad token: seqio pads with id 0, here also the token %r.", path, token_0)
    size = base_size + extra_ids
    return SpecialIds(pad=PAD_ID, sentinels=tuple(size - 1 - k for k in range(extra_ids)), **ids)
