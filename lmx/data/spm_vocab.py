"""SentencePiece vocabularies, unigram (Kudo 2018) and BPE (Sennrich et al. 2016): training and checked loading.

lmx trains them with T5's special ids: pad 0, eos 1, unk 2, no bos; then the control pieces <cls> 3 and <mask> 4,
which text never encodes to (reserved for BERT-style objectives; T5's own vocabulary has neither, so there cls and
mask are None unless config.data.special_tokens names a piece, e.g. one of the sentinels "▁<extra_id_99>").
Sentinels are seqio's extra ids on top of the pieces: with V = pieces + extra_ids, sentinel i is id V - 1 - i.
Characters outside 99.95% coverage fall back to their UTF-8 bytes, so any text encodes without unk.
"""

from __future__ import annotations

import io

import sentencepiece as spm
import seqio
import tensorflow as tf
from google.protobuf.message import DecodeError
from sentencepiece import sentencepiece_model_pb2

from lmx.data import special_tokens

CONTROL_PIECES = ("<cls>", "<mask>")  # ids 3 and 4 of a vocabulary lmx trains
MODEL_TYPES = {"unigram": sentencepiece_model_pb2.TrainerSpec.UNIGRAM, "bpe": sentencepiece_model_pb2.TrainerSpec.BPE}
# SentencePiece's result depends on its thread count; a fixed count makes it the same on every machine.
_TRAINER_THREADS = 8


def read_model(path: str, kind: str) -> sentencepiece_model_pb2.ModelProto:
    """The ModelProto of a `kind` ("unigram" | "bpe") .model file; one VocabularyError if it is not one."""
    if not tf.io.gfile.exists(path):
        raise special_tokens.VocabularyFileNotFound(f"{path} does not exist; expected a SentencePiece .model file")
    expected = (
        f"expected a SentencePiece {kind} .model file (from `python -m lmx.data.vocab --kind={kind}` or spm_train)"
    )
    with tf.io.gfile.GFile(path, "rb") as f:
        data = f.read()
    try:
        model = sentencepiece_model_pb2.ModelProto.FromString(data)
    except DecodeError as e:
        raise special_tokens.VocabularyError(f"{path} is not a SentencePiece model ({e}); {expected}") from None
    if not model.pieces:
        raise special_tokens.VocabularyError(f"{path} is not a SentencePiece model (it holds no pieces); {expected}")
    actual = next((name for name, t in MODEL_TYPES.items() if t == model.trainer_spec.model_type), None)
    if actual != kind:
        what = f"a SentencePiece {actual} model" if actual else "not a unigram or BPE SentencePiece model"
        raise special_tokens.VocabularyError(
            f"{path} is {what} but config.data.vocab_kind={kind!r}; {expected}, or set vocab_kind to the file's kind"
        )
    return model


def conventions(processor: spm.SentencePieceProcessor) -> dict[str, str | None]:
    """The pieces of each special role by lmx's convention: the model's own pad/eos/unk/bos, then <cls>, <mask>."""

    def piece(i: int) -> str | None:
        return processor.id_to_piece(i) if i >= 0 else None

    roles = {"pad": processor.pad_id(), "eos": processor.eos_id(), "unk": processor.unk_id(), "bos": processor.bos_id()}
    return {**{role: piece(i) for role, i in roles.items()}, "cls": CONTROL_PIECES[0], "mask": CONTROL_PIECES[1]}


def resolve(
    vocabulary: seqio.SentencePieceVocabulary, kind: str, token_names: dict[str, str], path: str
) -> special_tokens.SpecialIds:
    """SpecialIds of a seqio SentencePiece vocabulary (its pieces include seqio's "▁<extra_id_k>" pieces)."""
    processor = vocabulary.tokenizer
    pieces = {processor.id_to_piece(i): i for i in range(processor.get_piece_size())}
    base = processor.get_piece_size() - vocabulary.extra_ids
    return special_tokens.resolve(kind, pieces, token_names, conventions(processor), base, vocabulary.extra_ids, path)


class SentencePieceVocabulary(special_tokens.SpecialIdsOfVocabulary, seqio.SentencePieceVocabulary):
    """seqio's SentencePiece vocabulary with a checked file and explicit special ids (`special`)."""

    def __init__(self, path: str, kind: str, extra_ids: int = 0, token_names: dict[str, str] | None = None):
        spec = read_model(path, kind).trainer_spec
        # The TF path. tensorflow-text's SentencepieceTokenizer bundles an older SentencePiece that sums piece
        # scores in another order, so between unigram segmentations that tie within float32 rounding it may pick
        # the other one ("----" in T5's vocabulary: "---" "-" against "-" "---" of sentencepiece 0.2 and Hugging
        # Face). Its FastSentencepieceTokenizer agrees with sentencepiece 0.2 on unigram models but supports neither
        # BPE nor byte fallback, where the former is used (exact on BPE; on byte-fallback unigram models a tie now
        # and then, 1 of 159 paragraphs in tests/data/tokenizer_parity_test.py).
        fast = spec.model_type == MODEL_TYPES["unigram"] and not spec.byte_fallback
        super().__init__(path, extra_ids=extra_ids, use_fast_tokenizer=fast)
        self.special = resolve(self, kind, token_names or {}, path)


def train(lines: list[str], num_pieces: int, kind: str, seed: int) -> bytes:
    """A serialized `kind` SentencePiece model of `num_pieces` pieces (a soft limit: a corpus too small for it
    gives fewer), trained on `lines`; a deterministic function of (lines, num_pieces, kind, seed)."""
    model = io.BytesIO()
    spm.set_random_generator_seed(seed)
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(lines),
        model_writer=model,
        model_type=kind,
        vocab_size=num_pieces,
        hard_vocab_limit=False,
        pad_id=0,
        eos_id=1,
        unk_id=2,
        bos_id=-1,
        control_symbols=list(CONTROL_PIECES),
        byte_fallback=True,
        character_coverage=0.9995,
        max_sentence_length=1 << 16,
        input_sentence_size=0,  # the caller sampled already: use every line given
        shuffle_input_sentence=False,
        num_threads=_TRAINER_THREADS,
        minloglevel=2,
    )
    return model.getvalue()
