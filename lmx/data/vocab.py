"""Vocabularies of four kinds behind seqio's Vocabulary interface: training, caching, checked loading, special ids.

config.data.vocab_kind (KINDS) says what config.data.vocab_path is:
  unigram    a SentencePiece unigram .model (T5's vocabulary)    lmx.data.spm_vocab
  bpe        a SentencePiece BPE .model                          lmx.data.spm_vocab
  wordpiece  BERT's WordPiece vocab.txt                          lmx.data.wordpiece
  byte_bpe   GPT-2's byte-level BPE: vocab.json + merges.txt     lmx.data.byte_bpe
Tasks and feature converters see only seqio.Vocabulary (encode_tf in tf.data, all TF ops). Special ids are explicit:
`special_ids(vocabulary)` gives pad, eos, unk, bos, cls, mask and the sentinels (config.data.special_tokens names
the token of each role; "" keeps the kind's convention, see lmx.data.special_tokens).

Train one by hand:
  python -m lmx.data.vocab --kind=unigram --corpus=text_files --text_files='books/*.txt' --pieces=8000 \\
      --out=/tmp/books.model
(--kind=wordpiece writes a vocab.txt, --kind=byte_bpe a directory with vocab.json and merges.txt.)
With `data.vocab_path = ""`, `get_vocabulary` trains one on the corpus's train split on first use and caches it
under $LMX_CACHE_DIR (default ~/.cache/lmx)/vocab. SentencePiece kinds train with `sentencepiece`; wordpiece and
byte_bpe with Hugging Face `tokenizers`.
"""

from __future__ import annotations

import argparse
import functools
import hashlib
import os
import random
import re
import shutil
import sys
import tempfile
from collections.abc import Callable, Iterable

import ml_collections
import seqio
import tensorflow as tf
from absl import logging

from lmx.config_lib import ConfigError
from lmx.data import byte_bpe, sources, spm_vocab, wordpiece
from lmx.data.special_tokens import KINDS, SpecialIds, VocabularyError, VocabularyFileNotFound

# Training reads at most this many characters of the corpus (C4's train split is 800 GB) and trains on a random
# sample of at most MAX_TRAINING_CHARS of its lines: enough for a research vocabulary, seconds to a minute of work.
MAX_SCANNED_CHARS = 50_000_000
MAX_TRAINING_CHARS = 5_000_000
# A corpus is refused as not text when more than this fraction of its characters are undecodable bytes (U+FFFD once
# decoded as UTF-8) or control characters other than whitespace: random or binary files, UTF-16. Natural text, even
# with stray Latin-1 bytes, stays far below it.
MAX_NON_TEXT_FRACTION = 0.01
_NON_TEXT = re.compile("[\ufffd\x00-\x08\x0e-\x1f\x7f-\x9f]")
_CHECKED_BYTES = 1 << 16  # bytes read from the start of each text file to check that it is text
# Seed of the sample and of SentencePiece when get_vocabulary trains a vocabulary (not data.seed, so that changing
# the data order never changes the vocabulary).
_VOCAB_SEED = 0
_SENTENCEPIECE_KINDS = ("unigram", "bpe")


def _non_text_fraction(text: str) -> float:
    return len(_NON_TEXT.findall(text)) / max(len(text), 1)


def check_text_files(pattern: str) -> None:
    """Raises VocabularyError naming the files matched by `pattern` whose first 64 KiB are not UTF-8 text."""
    bad = []
    for path in sorted(tf.io.gfile.glob(pattern)):
        with tf.io.gfile.GFile(path, "rb") as f:
            fraction = _non_text_fraction(f.read(_CHECKED_BYTES).decode("utf-8", errors="replace"))
        if fraction > MAX_NON_TEXT_FRACTION:
            bad.append((path, fraction))
    if bad:
        path, fraction = bad[0]
        more = f" (and {len(bad) - 1} more files)" if len(bad) > 1 else ""
        raise VocabularyError(
            f"config.data.text_files={pattern!r} matches files that are not UTF-8 text: {path}{more} has "
            f"{fraction:.0%} undecodable bytes or control characters at its start; expected UTF-8 text files"
        )


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


def _write_atomically(out_path: str, write: Callable[[str], None], is_dir: bool) -> None:
    """Calls write(target) on a temporary file (or directory) beside `out_path`, then renames it to out_path:
    readers see the old vocabulary or the whole new one, never a partial one; a failure leaves nothing behind."""
    parent = os.path.dirname(os.path.abspath(out_path))
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(dir=parent, prefix=".tmp-vocab-")
    try:
        target = tmp if is_dir else os.path.join(tmp, "vocab")
        write(target)
        for name in os.listdir(tmp):
            os.chmod(os.path.join(tmp, name), 0o644)  # mkdtemp is private; the cache may be shared
        if not is_dir:
            os.replace(target, out_path)
        elif os.path.isdir(out_path):  # an existing directory: replace its files one by one
            for name in os.listdir(tmp):
                os.replace(os.path.join(tmp, name), os.path.join(out_path, name))
        else:
            os.chmod(tmp, 0o755)
            os.replace(tmp, out_path)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def train_vocabulary(
    texts: Iterable[str],
    out_path: str,
    num_pieces: int,
    seed: int = 0,
    max_chars: int = MAX_TRAINING_CHARS,
    kind: str = "unigram",
    lower_case: bool = True,
    source: str = "the corpus",
) -> str:
    """Trains a `kind` vocabulary of `num_pieces` ids (before sentinels) on `texts`; writes it atomically to
    `out_path` (a .model file, a vocab.txt, or for byte_bpe a directory) and returns out_path.

    Special ids: SentencePiece pad 0, eos 1, unk 2, <cls> 3, <mask> 4 (spm_vocab); WordPiece [PAD] [UNK] [CLS] [SEP]
    [MASK] 0-4; byte-level BPE <pad> <|endoftext|> <cls> <mask> 0-3. `lower_case`: WordPiece only. The result is
    a deterministic function of (texts, num_pieces, seed, max_chars, kind, lower_case). Raises VocabularyError
    (naming `source`) for a corpus that is not text or too small to train on.
    """
    lines = _training_lines(texts, seed, max_chars)
    if not lines:
        raise VocabularyError(f"{source} holds no text to train a vocabulary for {out_path}")
    fraction = _non_text_fraction("".join(lines))
    if fraction > MAX_NON_TEXT_FRACTION:
        raise VocabularyError(
            f"{source} is not UTF-8 text: {fraction:.0%} of the characters sampled to train a vocabulary are "
            "undecodable bytes or control characters; expected UTF-8 text"
        )
    if kind in _SENTENCEPIECE_KINDS:
        try:
            model = spm_vocab.train(lines, num_pieces, kind, seed)
        except RuntimeError as e:  # SentencePiece's own checks, e.g. more distinct characters than pieces
            reason = str(e).strip().splitlines()[-1]
            raise VocabularyError(
                f"SentencePiece cannot train a {num_pieces}-piece {kind} vocabulary on {source}: {reason}"
            ) from None

        def write(target):
            with open(target, "wb") as f:
                f.write(model)

        _write_atomically(out_path, write, is_dir=False)
    elif kind == "wordpiece":
        _write_atomically(out_path, lambda t: wordpiece.train(lines, t, num_pieces, lower_case), is_dir=False)
    elif kind == "byte_bpe":
        _write_atomically(out_path, lambda t: byte_bpe.train(lines, t, num_pieces), is_dir=True)
    else:
        raise ConfigError(f"vocabulary kind {kind!r} is unknown; choose one of {', '.join(KINDS)}")
    size = load_vocabulary(out_path, kind, extra_ids=0, lower_case=lower_case, token_names={}).vocab_size
    if size < num_pieces:
        logging.warning("The corpus supports only %d of the %d pieces asked for %s.", size, num_pieces, out_path)
    logging.info("Trained a %d-piece %s vocabulary on %d lines -> %s", size, kind, len(lines), out_path)
    return out_path


def corpus_texts(data_config: ml_collections.ConfigDict) -> Iterable[str]:
    """The documents of the train split of `data.corpus`, in source order."""
    dataset = sources.get_source(data_config).get_dataset(split="train", shuffle=False)
    for example in dataset.as_numpy_iterator():
        yield example["text"].decode("utf-8", errors="replace")


def cached_vocab_path(data_config: ml_collections.ConfigDict) -> str:
    """Where get_vocabulary keeps the auto-trained vocabulary of this corpus, kind and size."""
    cache_dir = os.environ.get("LMX_CACHE_DIR") or os.path.join(os.path.expanduser("~"), ".cache", "lmx")
    name = data_config.corpus
    if data_config.corpus in ("text_files", "books"):  # the corpus is whatever the glob matches
        name += "-" + hashlib.sha256(data_config.text_files.encode()).hexdigest()[:12]
    kind = data_config.vocab_kind
    if kind == "wordpiece":
        kind += "-uncased" if data_config.vocab_lower_case else "-cased"
    suffix = {"unigram": ".model", "bpe": ".model", "wordpiece": ".txt", "byte_bpe": ""}[data_config.vocab_kind]
    return os.path.join(cache_dir, "vocab", f"{name}-{kind}-{data_config.vocab_pieces}{suffix}")


def load_vocabulary(
    path: str, kind: str, extra_ids: int, lower_case: bool, token_names: dict[str, str]
) -> seqio.Vocabulary:
    """The `kind` vocabulary of `path`, with `extra_ids` sentinels on top; a file that is not one raises
    VocabularyError naming it. Loads each (file version, arguments) once per process."""
    files = {"byte_bpe": byte_bpe.files_of(path), "wordpiece": [wordpiece.file_of(path)]}.get(kind, [path])
    version = tuple((s.mtime_nsec, s.length) for s in map(tf.io.gfile.stat, filter(tf.io.gfile.exists, files)))
    names = tuple(sorted((role, name) for role, name in token_names.items() if name))
    return _load(path, kind, extra_ids, lower_case, names, version)


@functools.lru_cache(maxsize=16)
def _load(path, kind, extra_ids, lower_case, names, file_version) -> seqio.Vocabulary:
    del file_version  # part of the cache key only: a retrained file is loaded again
    if kind in _SENTENCEPIECE_KINDS:
        return spm_vocab.SentencePieceVocabulary(path, kind, extra_ids, dict(names))
    if kind == "wordpiece":
        return wordpiece.WordPieceVocabulary(path, lower_case, extra_ids, dict(names))
    return byte_bpe.ByteBpeVocabulary(path, extra_ids, dict(names))


def get_vocabulary(data_config: ml_collections.ConfigDict) -> seqio.Vocabulary:
    """The `data.vocab_kind` vocabulary of `data.vocab_path`, or (if "") one trained on the corpus and cached on
    first use. A missing file raises FileNotFoundError, a file or corpus that cannot be one VocabularyError."""
    kind = data_config.vocab_kind
    if kind not in KINDS:
        raise ConfigError(f"config.data.vocab_kind={kind!r} is unknown; choose one of {', '.join(KINDS)}")
    path = data_config.vocab_path
    if path:
        if not tf.io.gfile.exists(path):
            raise FileNotFoundError(
                f"config.data.vocab_path={path!r} does not exist: train it with `python -m lmx.data.vocab "
                f"--kind={kind} --corpus={data_config.corpus} --pieces={data_config.vocab_pieces} --out={path}`, "
                "or set data.vocab_path='' to train and cache one automatically"
            )
    else:
        path = cached_vocab_path(data_config)
        if not os.path.exists(path):
            logging.info("No cached vocabulary at %s: training one on %s.", path, data_config.corpus)
            if data_config.corpus in ("text_files", "books"):
                check_text_files(data_config.text_files)
            train_vocabulary(
                corpus_texts(data_config),
                path,
                data_config.vocab_pieces,
                seed=_VOCAB_SEED,
                kind=kind,
                lower_case=data_config.vocab_lower_case,
                source=f"config.data.corpus={data_config.corpus!r}",
            )
    token_names = {role: data_config.special_tokens[role] for role in data_config.special_tokens.keys()}
    try:
        return load_vocabulary(path, kind, data_config.extra_ids, data_config.vocab_lower_case, token_names)
    except (VocabularyError, VocabularyFileNotFound) as e:
        if not data_config.vocab_path or str(e).startswith("config."):
            raise
        raise type(e)(f"config.data.vocab_path={path!r}: {e}") from None  # the user's file: name its field


def special_ids(vocabulary: seqio.Vocabulary) -> SpecialIds:
    """The special ids of a vocabulary from get_vocabulary (or of a plain seqio.SentencePieceVocabulary, by lmx's
    SentencePiece convention)."""
    special = getattr(vocabulary, "special", None)
    if isinstance(special, SpecialIds):
        return special
    if isinstance(vocabulary, seqio.SentencePieceVocabulary):
        model_type = spm_vocab.sentencepiece_model_pb2.ModelProto.FromString(vocabulary.sp_model).trainer_spec
        kind = "bpe" if model_type.model_type == spm_vocab.MODEL_TYPES["bpe"] else "unigram"
        return spm_vocab.resolve(vocabulary, kind, {}, vocabulary.sentencepiece_model_file)
    raise TypeError(f"{type(vocabulary).__name__} is not a vocabulary of lmx.data.vocab.get_vocabulary")


def main(argv: list[str] | None = None) -> None:
    from lmx import config_lib

    parser = argparse.ArgumentParser(prog="python -m lmx.data.vocab", description=__doc__.split("\n")[0])
    parser.add_argument("--kind", default="unigram", choices=list(KINDS), help="vocabulary kind (see above)")
    parser.add_argument("--corpus", required=True, help=f"one of {', '.join(sources.SOURCES)}")
    parser.add_argument("--text_files", default="", help="glob of text files, for --corpus=text_files")
    parser.add_argument("--tfds_data_dir", default="", help="TFDS data_dir, for TFDS corpora")
    parser.add_argument("--pieces", type=int, required=True, help="vocabulary size (sentinels are not included)")
    parser.add_argument("--out", required=True, help="the .model / vocab.txt file, or byte_bpe's directory, to write")
    parser.add_argument("--lower_case", action=argparse.BooleanOptionalAction, default=True, help="wordpiece only")
    parser.add_argument("--seed", type=int, default=_VOCAB_SEED, help="seed of the sample and of SentencePiece")
    args = parser.parse_args(argv)
    logging.set_verbosity(logging.INFO)
    sources.hide_accelerators_from_tf()
    data_config = config_lib.base_config().data
    data_config.corpus = args.corpus
    data_config.text_files = args.text_files
    data_config.tfds_data_dir = args.tfds_data_dir
    try:
        if args.pieces < 1:
            raise ConfigError(f"--pieces={args.pieces} must be >= 1")
        if args.corpus == "text_files":
            check_text_files(args.text_files)
        texts = corpus_texts(data_config)
        train_vocabulary(
            texts, args.out, args.pieces, seed=args.seed, kind=args.kind, lower_case=args.lower_case, source=args.corpus
        )
    except (ValueError, FileNotFoundError) as e:
        print(f"lmx.data.vocab: error: {e}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
