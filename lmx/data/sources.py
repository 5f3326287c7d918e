"""Raw text sources: name -> seqio.DataSource with "train" and "validation" splits of {"text": string} examples.

- `embedded`: Python's own documentation (`pydoc_data.topics`, ~465K characters), present on every machine.
- `text_files`: local (or gfile-readable) text files matched by `data.text_files`.
- `books`: BookCorpus-style local books, one file per book matched by `data.text_files`; whole books are held out.
- `c4`, `wikipedia`, `lm1b`: TensorFlow Datasets, read from `data.tfds_data_dir` (prepared beforehand; nothing
  downloads here).

Corpora without a validation split hold out `data.eval_fraction` of their documents. For `embedded` and
`text_files` a document belongs to validation when the fingerprint of its text falls in the lowest `eval_fraction`
of the hash range: stable across runs, machines and file order, and duplicated documents never straddle the split.
Everything here is TF ops (no py_function), so tf.data iterators over these sources can be checkpointed.
"""

from __future__ import annotations

import functools
import hashlib
import os
from collections.abc import Callable

import ml_collections
import seqio
import tensorflow as tf
import tensorflow_datasets as tfds
from absl import logging

# Paragraphs are grouped into documents of about this many bytes (~250 tokens): long enough that a held-out
# document is a real passage, short enough that the hash split of a small corpus is even.
_DOCUMENT_BYTES = 1000
# Books are held out whole, so their documents can be longer: a few pages (~2,500 tokens), in which sentence-pair
# objectives find consecutive segments, while the stream still interleaves many books.
_BOOK_DOCUMENT_BYTES = 10_000
# Resolution of the hash split (eval_fraction is rounded to a multiple of 1 / _HASH_BUCKETS).
_HASH_BUCKETS = 1_000_000
# Files read at once when shuffling `text_files`, so that the stream mixes books rather than reading one at a time.
_INTERLEAVED_FILES = 16
# The embedded corpus has ~500 documents: a shuffle buffer of this size holds them all.
_EMBEDDED_SHUFFLE_BUFFER = 1000

C4_TFDS_NAME = "c4/en:3.1.0"
WIKIPEDIA_TFDS_NAME = "wikipedia/20230601.en:1.0.0"
LM1B_TFDS_NAME = "lm1b:1.1.0"


@functools.cache  # once per process: later calls do nothing
def hide_accelerators_from_tf() -> None:
    """Keeps TensorFlow (the input pipeline only) off the GPUs so it never takes memory from JAX.

    It only takes effect before TF's runtime starts (the first TF op), so importing `lmx.data` calls it, before
    any module of the package can run one (vocabulary training, seqio tasks).
    """
    try:
        tf.config.set_visible_devices([], "GPU")
    except RuntimeError as e:  # TF's runtime already started (by code outside lmx): too late to change.
        logging.warning("Could not hide GPUs from TensorFlow (%s).", e)


def text_documents(text: tf.Tensor, document_bytes: int = _DOCUMENT_BYTES) -> tf.Tensor:
    """[num_documents] strings: hard-wrapped `text` cut into documents of whole paragraphs.

    Paragraphs are separated by blank lines; the wrapped lines of a paragraph are joined with single spaces,
    except in a block whose every line is indented (code, quoted verse), which keeps its lines. Paragraphs that
    start in the same `document_bytes`-byte window of the (paragraph) text form one document, joined by newlines.
    """
    text = tf.strings.regex_replace(text, r"\r\n?", "\n")
    blocks = tf.strings.split(tf.strings.regex_replace(text, r"\n\s*\n", "\x1e"), sep="\x1e")  # [num_blocks]
    blocks = tf.strings.regex_replace(blocks, r"^\s*\n|\s+$", "")  # blank lines at either end
    blocks = tf.strings.regex_replace(blocks, r"[ \t\f\v]+\n", "\n")  # spaces ending a line
    preformatted = tf.strings.regex_full_match(blocks, r"[ \t][^\n]*(\n[ \t][^\n]*)*")
    joined = tf.strings.strip(tf.strings.regex_replace(blocks, r"[ \t\f\v]*\n[ \t\f\v]*", " "))
    paragraphs = tf.where(preformatted, blocks, joined)
    paragraphs = tf.boolean_mask(paragraphs, tf.strings.length(tf.strings.strip(paragraphs)) > 0)  # [num_paragraphs]
    window = tf.math.cumsum(tf.strings.length(paragraphs), exclusive=True) // document_bytes  # [num_paragraphs]
    num_windows = tf.reduce_max(tf.concat([[-1], window], axis=0)) + 1
    documents = tf.strings.unsorted_segment_join(paragraphs, window, num_windows, separator="\n")  # [num_windows]
    return tf.boolean_mask(documents, tf.strings.length(documents) > 0)  # a long paragraph leaves windows empty


def _documents_of_text(text: tf.Tensor) -> tf.data.Dataset:
    return tf.data.Dataset.from_tensor_slices(text_documents(text))


def _check_split(split: str) -> None:
    if split not in ("train", "validation"):
        raise ValueError(f"Unknown split {split!r}; known: train, validation")


def _check_eval_fraction(data_config: ml_collections.ConfigDict) -> float:
    if not 0 < data_config.eval_fraction < 1:
        raise ValueError(f"data.eval_fraction={data_config.eval_fraction} must lie in (0, 1) for {data_config.corpus}")
    return data_config.eval_fraction


def _held_out(docs: tf.data.Dataset, split: str, eval_fraction: float) -> tf.data.Dataset:
    """The documents of `split` under the stable hash split, as {"text": document} examples."""
    threshold = round(eval_fraction * _HASH_BUCKETS)

    def in_split(text):
        is_eval = tf.strings.to_hash_bucket_fast(text, _HASH_BUCKETS) < threshold  # FarmHash fingerprint: stable
        return is_eval if split == "validation" else tf.logical_not(is_eval)

    def example(text):
        return {"text": text}

    return docs.filter(in_split).map(example)


def embedded_source(data_config: ml_collections.ConfigDict) -> seqio.DataSource:
    """The text of Python's help topics (`pydoc_data.topics`; it varies a little between Python versions)."""
    from pydoc_data import topics  # the standard library's own docs: the one corpus every machine has

    texts = [topics.topics[name] for name in sorted(topics.topics)]
    eval_fraction = _check_eval_fraction(data_config)

    def dataset_fn(split: str, shuffle_files: bool, seed: int | None = None) -> tf.data.Dataset:
        _check_split(split)
        docs = tf.data.Dataset.from_tensor_slices(texts).flat_map(_documents_of_text)
        if shuffle_files:
            docs = docs.shuffle(_EMBEDDED_SHUFFLE_BUFFER, seed=seed)
        return _held_out(docs, split, eval_fraction)

    return seqio.FunctionDataSource(dataset_fn, splits=("train", "validation"))


def _matched_files(data_config: ml_collections.ConfigDict) -> list[str]:
    pattern = data_config.text_files
    fix = "set data.text_files to a glob of UTF-8 .txt files, e.g. --config.data.text_files='books/*.txt'"
    files = sorted(tf.io.gfile.glob(pattern)) if pattern else []
    if not files:
        raise ValueError(f"data.text_files={pattern!r} matches no files; {fix}")
    if all(tf.io.gfile.stat(f).length == 0 for f in files):
        raise ValueError(f"data.text_files={pattern!r} matches only empty files ({len(files)}); {fix}")
    return files


def _documents_of_files(files: list[str], shuffle_files: bool, seed: int | None, document_bytes: int):
    """The documents of `files`, file after file, or (shuffled) interleaved from several files at a time."""

    def documents(path):
        return tf.data.Dataset.from_tensor_slices(text_documents(tf.io.read_file(path), document_bytes))

    paths = tf.data.Dataset.from_tensor_slices(files)
    if not shuffle_files:
        return paths.flat_map(documents)
    paths = paths.shuffle(len(files), seed=seed)
    return paths.interleave(documents, cycle_length=min(len(files), _INTERLEAVED_FILES), block_length=1)


def text_files_source(data_config: ml_collections.ConfigDict) -> seqio.DataSource:
    """Text files matched by `data.text_files` (UTF-8), cut into paragraph documents (see `text_documents`)."""
    files = _matched_files(data_config)
    eval_fraction = _check_eval_fraction(data_config)

    def dataset_fn(split: str, shuffle_files: bool, seed: int | None = None) -> tf.data.Dataset:
        _check_split(split)
        return _held_out(_documents_of_files(files, shuffle_files, seed, _DOCUMENT_BYTES), split, eval_fraction)

    return seqio.FunctionDataSource(dataset_fn, splits=("train", "validation"))


def held_out_books(files: list[str], eval_fraction: float) -> tuple[list[str], list[str]]:
    """(train, validation) books: the round(eval_fraction x books) books, at least one, whose file names hash
    lowest (SHA-256 of the base name: stable across machines and directories) are held out whole."""
    order = sorted(files, key=lambda path: hashlib.sha256(os.path.basename(path).encode()).hexdigest())
    held = max(1, round(eval_fraction * len(files)))
    return sorted(order[held:]), sorted(order[:held])


def books_source(data_config: ml_collections.ConfigDict) -> seqio.DataSource:
    """BookCorpus-style books (Zhu et al. 2015; BERT's second corpus): one UTF-8 file per book, matched by
    `data.text_files`, as one sentence per line (BookCorpus) or wrapped paragraphs (Project Gutenberg).

    Unlike `text_files`, validation holds out whole books (`held_out_books`), so no page of an evaluated book was
    trained on, and documents are longer (`_BOOK_DOCUMENT_BYTES` windows of paragraphs; a BookCorpus file without
    blank lines is one paragraph, i.e. one document per book, as BERT's input files had).
    """
    files = _matched_files(data_config)
    if len(files) < 2:
        raise ValueError(
            f"data.text_files={data_config.text_files!r} matches {len(files)} book; corpus 'books' holds out whole "
            "books for validation, so give it at least two files (or use corpus=text_files)"
        )
    train, validation = held_out_books(files, _check_eval_fraction(data_config))

    def dataset_fn(split: str, shuffle_files: bool, seed: int | None = None) -> tf.data.Dataset:
        _check_split(split)
        docs = _documents_of_files(train if split == "train" else validation, shuffle_files, seed, _BOOK_DOCUMENT_BYTES)
        return docs.map(lambda text: {"text": text})

    return seqio.FunctionDataSource(dataset_fn, splits=("train", "validation"))


def _tfds_data_dir(data_config: ml_collections.ConfigDict) -> str | None:
    return data_config.tfds_data_dir or None


class PreparedTfdsDataSource(seqio.TfdsDataSource):
    """A TFDS source that only reads data already prepared on disk (read_only: seqio would otherwise try to
    download and build the dataset at run time), and says so in one line when it is missing."""

    def __init__(self, tfds_name: str, tfds_data_dir: str | None, splits):
        super().__init__(tfds_name=tfds_name, tfds_data_dir=tfds_data_dir, splits=splits, read_only=True)
        self._name_for_errors = tfds_name
        self._data_dir_for_errors = tfds_data_dir

    def get_dataset(self, *args, **kwargs) -> tf.data.Dataset:
        try:
            return super().get_dataset(*args, **kwargs)
        except (AssertionError, tfds.core.DatasetNotFoundError, FileNotFoundError) as e:
            where = self._data_dir_for_errors or "TFDS's default data_dir (~/tensorflow_datasets)"
            raise FileNotFoundError(
                f"TFDS dataset {self._name_for_errors} is not prepared in {where}; prepare it there first "
                f"(`tfds build {self._name_for_errors.split(':')[0]} --data_dir=...`) and set "
                "config.data.tfds_data_dir, or use --config.data.corpus=embedded|text_files"
            ) from e


def c4_source(data_config: ml_collections.ConfigDict) -> seqio.DataSource:
    """C4 English (Raffel et al. 2020, section 2.2) with its own train and validation splits."""
    return PreparedTfdsDataSource(C4_TFDS_NAME, _tfds_data_dir(data_config), ("train", "validation"))


def wikipedia_source(data_config: ml_collections.ConfigDict) -> seqio.DataSource:
    """English Wikipedia; the last `eval_fraction` of its only split ("train") is held out by TFDS slicing."""
    cut = f"{round(100 * (1 - _check_eval_fraction(data_config)), 6):g}%"
    return PreparedTfdsDataSource(
        WIKIPEDIA_TFDS_NAME,
        _tfds_data_dir(data_config),
        {"train": f"train[:{cut}]", "validation": f"train[{cut}:]"},
    )


def lm1b_source(data_config: ml_collections.ConfigDict) -> seqio.DataSource:
    """The One Billion Word benchmark (Chelba et al. 2013): shuffled single sentences; its "test" split (the
    benchmark's held-out sentences) is the validation split."""
    return PreparedTfdsDataSource(LM1B_TFDS_NAME, _tfds_data_dir(data_config), {"train": "train", "validation": "test"})


SOURCES: dict[str, Callable[[ml_collections.ConfigDict], seqio.DataSource]] = {
    "embedded": embedded_source,
    "text_files": text_files_source,
    "c4": c4_source,
    "wikipedia": wikipedia_source,
    "lm1b": lm1b_source,
    "books": books_source,
}


def get_source(data_config: ml_collections.ConfigDict) -> seqio.DataSource:
    """The DataSource of `data.corpus`."""
    if data_config.corpus not in SOURCES:
        raise ValueError(f"Unknown data.corpus {data_config.corpus!r}; known: {', '.join(SOURCES)}")
    return SOURCES[data_config.corpus](data_config)
