"""Real text for the objective tests: Gutenberg books of ../shared/data, tokenized with the T5 vocabulary."""

import pathlib

import seqio
import tensorflow as tf

from lmx.data import sources
from lmx.data.masking import ObjectiveIds

# About 120K T5 tokens in 1,100 documents of ~1,000 bytes.
BOOKS = ("austen-persuasion.txt", "carroll-alice.txt")


def documents(shared_data: pathlib.Path, books=BOOKS) -> tf.data.Dataset:
    """{"text": document} examples of `books`, cut into paragraph documents as the text-file source does."""
    paths = [str(shared_data / "pretrain" / "gutenberg" / name) for name in books]
    docs = tf.data.Dataset.from_tensor_slices(paths).flat_map(
        lambda path: tf.data.Dataset.from_tensor_slices(sources.text_documents(tf.io.read_file(path)))
    )
    return docs.map(lambda text: {"text": text})


def features(vocab: seqio.Vocabulary, keys=("inputs", "targets")) -> dict[str, seqio.Feature]:
    return {key: seqio.Feature(vocab) for key in keys}


def tokenized(docs: tf.data.Dataset, vocab: seqio.Vocabulary) -> tf.data.Dataset:
    """{"targets": tokens} documents."""
    docs = seqio.preprocessors.rekey(docs, key_map={"targets": "text"})
    return seqio.preprocessors.tokenize(docs, features(vocab), copy_pretokenized=False)


def t5_objective_ids(vocab: seqio.SentencePieceVocabulary) -> ObjectiveIds:
    """T5's pad/eos/unk and three of its sentinels as [MASK], [CLS], [SEP]; random tokens from the 32,000 pieces."""
    top = vocab.vocab_size - 1  # <extra_id_0>
    return ObjectiveIds(pad=0, eos=1, unk=2, mask=top, cls=top - 1, sep=top - 2, num_tokens=vocab.vocab_size - 100)
