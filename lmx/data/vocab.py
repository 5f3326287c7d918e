"""SentencePiece vocabularies: training, caching and loading (T5 conventions: pad=0, eos=1, unk=2, no bos).

Sentinels are seqio's extra ids on top of the pieces: with V = pieces + extra_ids, sentinel i is id V - 1 - i.

Train one by hand:
  python -m lmx.data.vocab --corpus=text_files --text_files='books/*.txt' --pieces=8000 --out=/tmp/books.model
With `data.vocab_path = ""`, `get_vocabulary` trains one on the corpus's train split on first use and caches it
under $LMX_CACHE_DIR (default ~/.cache/lmx)/vocab.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import os
import random
import tempfile
from collections.abc import Iterable

import ml_collections
import sentencepiece as spm
import seqio
import tensorflow as tf
from absl import logging

from lmx.data import sources

# Training reads at most this many characters of the corpus (C4's train split is 800 GB) and trains on a random
# sample of at most MAX_TRAINING_CHARS of its lines: enough for a research vocabulary, seconds to a minute of work.
MAX_SCANNED_CHARS = 50_000_000
MAX_TRAINING_CHARS = 5_000_000
# SentencePiece's result depends on its thread count; a fixed count makes it the same on every machine.
_TRAINER_THREADS = 8
# Seed of the sample and of SentencePiece when get_vocabulary trains a vocabulary (not data.seed, so that changing
# the data order never changes the vocabulary).
_VOCAB_SEED = 0


def _training_lines(texts: Iterable[str], seed: int, max_chars: int) -> list[str]:
    """Nonempty lines of `texts` (SentencePiece's "sentences"), sampled down to about `max_chars` characters."""
    lines, scanned = [], 0
    for text in texts:
        lines.extend(line for line in text.splitlines() if line.strip())
        scanned += len(text)
        if scanned >= MAX_SCANNED_CHARS:
            break
    if scanned > max_chars:
        random.Random(seed).shuffle(lines)
        sample, size = [], 0
        for line in lines:
            if size >= max_chars:
                break
            sample.append(line)
            size += len(line)
        lines = sample
    return lines


def train_vocabulary(
    texts: Iterable[str], out_path: str, num_pieces: int, seed: int = 0, max_chars: int = MAX_TRAINING_CHARS
) -> str:
    """Trains a unigram SentencePiece model on `texts` and writes it atomically to `out_path`; returns out_path.

    Ids: pad=0, eos=1, unk=2, no bos (T5). Characters outside 99.95% coverage fall back to their UTF-8 bytes, so any
    text encodes without unk. `num_pieces` is a soft limit: a corpus too small for it gives fewer pieces (logged)
    rather than an error. The result is a deterministic function of (texts, num_pieces, seed, max_chars).
    """
    lines = _training_lines(texts, seed, max_chars)
    if not lines:
        raise ValueError(f"No text to train a vocabulary for {out_path}")
    model = io.BytesIO()
    spm.set_random_generator_seed(seed)
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(lines),
        model_writer=model,
        model_type="unigram",
        vocab_size=num_pieces,
        hard_vocab_limit=False,
        pad_id=0,
        eos_id=1,
        unk_id=2,
        bos_id=-1,
        byte_fallback=True,
        character_coverage=0.9995,
        max_sentence_length=1 << 16,
        input_sentence_size=0,  # we sampled already: use every line given
        shuffle_input_sentence=False,
        num_threads=_TRAINER_THREADS,
        minloglevel=2,
    )
    size = spm.SentencePieceProcessor(model_proto=model.getvalue()).get_piece_size()
    if size < num_pieces:
        logging.warning("The corpus supports only %d of the %d pieces asked for %s.", size, num_pieces, out_path)
    # Write beside the target and rename: readers see the old file or the whole new one, never a partial one.
    directory = os.path.dirname(os.path.abspath(out_path))
    os.makedirs(directory, exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=directory, prefix=".tmp-", suffix=".model", delete=False) as f:
        f.write(model.getvalue())
    try:
        os.chmod(f.name, 0o644)  # NamedTemporaryFile makes 0600 files; the cache may be shared
        os.replace(f.name, out_path)
    except BaseException:
        os.remove(f.name)
        raise
    logging.info("Trained a %d-piece vocabulary on %d lines -> %s", size, len(lines), out_path)
    return out_path


def corpus_texts(data_config: ml_collections.ConfigDict) -> Iterable[str]:
    """The documents of the train split of `data.corpus`, in source order."""
    dataset = sources.get_source(data_config).get_dataset(split="train", shuffle=False)
    for example in dataset.as_numpy_iterator():
        yield example["text"].decode("utf-8", errors="replace")


def cached_vocab_path(data_config: ml_collections.ConfigDict) -> str:
    """Where get_vocabulary keeps the auto-trained vocabulary of this corpus and size."""
    cache_dir = os.environ.get("LMX_CACHE_DIR") or os.path.join(os.path.expanduser("~"), ".cache", "lmx")
    name = data_config.corpus
    if data_config.corpus == "text_files":
        name += "-" + hashlib.sha256(data_config.text_files.encode()).hexdigest()[:12]
    return os.path.join(cache_dir, "vocab", f"{name}-{data_config.vocab_pieces}.model")


def get_vocabulary(data_config: ml_collections.ConfigDict) -> seqio.SentencePieceVocabulary:
    """The vocabulary of `data.vocab_path`, or (if "") one trained on the corpus and cached on first use."""
    path = data_config.vocab_path
    if path:
        if not tf.io.gfile.exists(path):
            raise FileNotFoundError(
                f"data.vocab_path={path!r} does not exist: train it with `python -m lmx.data.vocab "
                f"--corpus={data_config.corpus} --pieces={data_config.vocab_pieces} --out={path}`, or set "
                f"data.vocab_path='' to train and cache one automatically"
            )
    else:
        path = cached_vocab_path(data_config)
        if not os.path.exists(path):
            logging.info("No cached vocabulary at %s: training one on %s.", path, data_config.corpus)
            train_vocabulary(corpus_texts(data_config), path, data_config.vocab_pieces, seed=_VOCAB_SEED)
    return seqio.SentencePieceVocabulary(path, extra_ids=data_config.extra_ids)


def main(argv: list[str] | None = None) -> None:
    from lmx import config_lib

    parser = argparse.ArgumentParser(prog="python -m lmx.data.vocab", description=__doc__.split("\n")[0])
    parser.add_argument("--corpus", required=True, help=f"one of {', '.join(sources.SOURCES)}")
    parser.add_argument("--text_files", default="", help="glob of text files, for --corpus=text_files")
    parser.add_argument("--tfds_data_dir", default="", help="TFDS data_dir, for TFDS corpora")
    parser.add_argument("--pieces", type=int, required=True, help="number of pieces (sentinels are not included)")
    parser.add_argument("--out", required=True, help="path of the .model file to write")
    parser.add_argument("--seed", type=int, default=_VOCAB_SEED, help="seed of the sample and of SentencePiece")
    args = parser.parse_args(argv)
    logging.set_verbosity(logging.INFO)
    sources.hide_accelerators_from_tf()
    data_config = config_lib.base_config().data
    data_config.corpus = args.corpus
    data_config.text_files = args.text_files
    data_config.tfds_data_dir = args.tfds_data_dir
    train_vocabulary(corpus_texts(data_config), args.out, args.pieces, seed=args.seed)


if __name__ == "__main__":
    main()
