"""GPT-2's byte-level BPE (Radford et al. 2019, section 2.2) as a seqio Vocabulary, in TF ops and in Python.

Text is taken as UTF-8 bytes and every byte value is a symbol of the base alphabet, so any text, even invalid
UTF-8, encodes without an unknown token. Encoding, the same in both paths:
  1. Pre-tokenization cuts the text into words by GPT-2's pattern (first rule that matches, left to right):
     a. an apostrophe contraction: 's 't 're 've 'm 'll 'd;
     b. an optional space, then a run of letters (\\p{L}), or a run of numbers (\\p{N}), or a run of other
        characters (neither letter, number nor whitespace);
     c. a run of whitespace, up to the end of the text or stopping one character short of the next non-space
        character (that last whitespace character starts the next word; a space becomes rule b's optional space).
  2. A word's UTF-8 bytes are its first symbols.
  3. BPE: repeatedly merge, in every word, the adjacent pair of lowest rank (its line in merges.txt), all of its
     non-overlapping occurrences left to right, until no adjacent pair has a rank.
  4. Ids are the vocabulary ids of the final symbols.
Special tokens (<|endoftext|> ...) written in the text are encoded as text, never as their ids.

Files are GPT-2's: vocab.json ({token: id}) and merges.txt ("a b" per line, by rank, after a "#version" line),
tokens spelled in GPT-2's byte-to-unicode alphabet (`byte_to_unicode`).

The TF path splits words with RE2 (regex_replace marks word starts, see _word_lengths), keeps symbols as vocabulary
ids (the merge of ids a, b is looked up under the key a * V + b) and runs the merges of all words of a text at once
in a tf.while_loop, one merge rank per word per iteration. It is TF ops only (no py_function), so tf.data iterators
over it can be checkpointed. The Python path (encode/decode) is a second implementation of the same steps.
"""

from __future__ import annotations

import itertools
import json
import os
import unicodedata

import seqio
import tensorflow as tf

from lmx.data import special_tokens

# Plain TF ops without Python control flow on tensors: autograph has nothing to convert here, and converting them
# anyway costs seconds of tracing per tf.data pipeline.
_NOT_AUTOGRAPHED = tf.autograph.experimental.do_not_convert
VOCAB_FILE = "vocab.json"
MERGES_FILE = "merges.txt"
SPECIAL_TOKENS = ("<pad>", "<|endoftext|>", "<cls>", "<mask>")  # ids 0-3 of a vocabulary lmx trains
_PYTHON_CACHE_WORDS = 100_000  # words whose BPE the Python path remembers
_CONTRACTIONS = ("'s", "'t", "'re", "'ve", "'m", "'ll", "'d")
# Whitespace as GPT-2's regex (Unicode's White_Space property): \t \n \v \f \r, U+0085 and the separators \p{Z}.
_SPACE = r"\t-\r \x{85}\p{Z}"
# GPT-2's pattern without its lookahead (RE2 has none): rule c here takes the whole whitespace run. NUL, the word
# mark of _word_lengths, is in no class.
_WORD_RE2 = "|".join(_CONTRACTIONS) + rf"| ?\p{{L}}+| ?\p{{N}}+| ?[^\x00{_SPACE}\p{{L}}\p{{N}}]+|[{_SPACE}]+"


def byte_to_unicode() -> dict[int, str]:
    """GPT-2's printable spelling of bytes: printable Latin-1 bytes stand for themselves, the other 68 bytes
    (controls, space, U+007F-U+00A0, soft hyphen) for U+0100 onwards in byte order."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    mapping = {b: chr(b) for b in printable}
    for n, b in enumerate(b for b in range(256) if b not in mapping):
        mapping[b] = chr(256 + n)
    return mapping


def _is_space(char: str) -> bool:
    return char in "\t\n\x0b\x0c\r\x85" or unicodedata.category(char) in ("Zs", "Zl", "Zp")


def _char_class(char: str) -> str:
    """The class of a character in GPT-2's pattern: L letter, N number, S whitespace or O other."""
    category = unicodedata.category(char)[0]
    return category if category in "LN" else "S" if _is_space(char) else "O"


def pretokenize(text: str) -> list[str]:
    """GPT-2's words of `text` (step 1 of the module docstring), written as a scanner over character classes."""
    words, i, n = [], 0, len(text)
    while i < n:
        contraction = next((c for c in _CONTRACTIONS if text.startswith(c, i)), None)
        if contraction:
            words.append(contraction)
            i += len(contraction)
            continue
        start = i
        if text[i] == " " and i + 1 < n and not _is_space(text[i + 1]):
            i += 1  # rule b's optional space
        kind = _char_class(text[i])
        j = i + 1
        while j < n and _char_class(text[j]) == kind:
            j += 1
        if kind == "S" and j < n and j - start > 1:
            j -= 1  # rule c: leave the last whitespace character to the next word
        words.append(text[start:j])
        i = j
    return words


class ByteBpeVocabulary(special_tokens.SpecialIdsOfVocabulary, seqio.Vocabulary):
    """GPT-2 byte-level BPE from vocab.json + merges.txt; sentinels (extra ids) sit on top of the vocabulary."""

    def __init__(self, path: str, extra_ids: int = 0, token_names: dict[str, str] | None = None):
        """`path`: a directory holding vocab.json and merges.txt, or a vocab.json with merges.txt beside it.
        `token_names` overrides the token of special roles (see special_tokens.resolve)."""
        self.path = path
        vocab_path, merges_path = files_of(path)
        vocab, merges = read_files(vocab_path, merges_path)
        to_byte = {char: byte for byte, char in byte_to_unicode().items()}
        self._token_bytes = [b""] * len(vocab)  # id -> the bytes it stands for
        for token, i in vocab.items():
            spelled = all(c in to_byte for c in token)
            self._token_bytes[i] = bytes(to_byte[c] for c in token) if spelled else token.encode("utf-8")
        missing = [b for b, char in byte_to_unicode().items() if char not in vocab]
        if missing:
            raise special_tokens.VocabularyError(
                f"{vocab_path} lacks the tokens of {len(missing)} byte values (e.g. byte {missing[0]}); expected a "
                "byte-level BPE vocab.json holding all 256 bytes"
            )
        self._byte_ids = [vocab[char] for _, char in sorted(byte_to_unicode().items())]  # byte value -> id
        self._ranks = {}  # (id, id) -> merge rank
        self._merged = []  # rank -> id of the merged symbol
        for rank, (a, b) in enumerate(merges):
            if a not in vocab or b not in vocab or a + b not in vocab:
                raise special_tokens.VocabularyError(
                    f"{merges_path}: merge {rank} ({a!r} {b!r}) needs tokens that {vocab_path} lacks; expected the "
                    "merges.txt written with this vocab.json"
                )
            self._ranks[(vocab[a], vocab[b])] = rank
            self._merged.append(vocab[a + b])
        self._cache: dict[str, list[int]] = {}
        self._tf = None
        conventions = special_tokens.CONVENTIONS["byte_bpe"]
        self.special = special_tokens.resolve(
            "byte_bpe", vocab, token_names or {}, conventions, len(vocab), extra_ids, path
        )
        super().__init__(extra_ids=extra_ids)

    @property
    def _base_vocab_size(self) -> int:
        return len(self._token_bytes)

    @property
    def token_bytes(self) -> list[bytes]:
        """id -> the bytes the token stands for (whole-word masking reads which tokens start with a space)."""
        return self._token_bytes

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state["_tf"] = None  # TF tables are built again on first use after unpickling
        return state

    # Python path.

    def _bpe(self, word: bytes) -> list[int]:
        """Steps 2-4 for one word; merges all occurrences of the lowest-ranked pair, left to right."""
        ids = [self._byte_ids[b] for b in word]
        while len(ids) > 1:
            ranks = [self._ranks.get(pair, len(self._merged)) for pair in itertools.pairwise(ids)]
            best = min(ranks)
            if best == len(self._merged):
                break
            merged, i = [], 0
            while i < len(ids):
                if i + 1 < len(ids) and ranks[i] == best:
                    merged.append(self._merged[best])
                    i += 2
                else:
                    merged.append(ids[i])
                    i += 1
            ids = merged
        return ids

    def _encode(self, s: str) -> list[int]:
        ids = []
        for word in pretokenize(s):
            if word not in self._cache:
                if len(self._cache) >= _PYTHON_CACHE_WORDS:
                    self._cache.clear()
                self._cache[word] = self._bpe(word.encode("utf-8"))
            ids.extend(self._cache[word])
        return ids

    def bytes_of(self, ids) -> bytes:
        """The bytes `ids` stand for: decode() without the UTF-8 decoding (encoding any bytes gives them back)."""
        return b"".join(self._bytes_of(int(i)) for i in ids)

    def _decode(self, ids) -> str:
        ids = [int(i) for i in ids]
        if self.eos_id in ids:  # seqio's contract: through the first eos
            ids = ids[: ids.index(self.eos_id) + 1]
        return self.bytes_of(ids).decode("utf-8", errors="replace")

    def _bytes_of(self, i: int) -> bytes:
        if i < self._base_vocab_size:
            return self._token_bytes[i]
        return f"<extra_id_{self.vocab_size - 1 - i}>".encode()  # sentinels count down from the top

    # TF path.

    def _tables(self) -> dict:
        """TF constants and the merge table, built eagerly on first use (init_scope: also when first asked inside a
        tf.function or a tf.data map), so that every graph can capture them."""
        if self._tf is None:
            with tf.init_scope():
                self._tf = self._make_tables()
        return self._tf

    def _make_tables(self) -> dict:
        v = self._base_vocab_size
        keys = tf.constant([a * v + b for a, b in self._ranks], tf.int64)
        ranks = tf.constant(list(self._ranks.values()), tf.int64)
        return {
            "ranks": tf.lookup.StaticHashTable(
                tf.lookup.KeyValueTensorInitializer(keys, ranks), default_value=len(self._merged)
            ),
            "merged": tf.constant(self._merged + [0], tf.int64),  # [merges + 1]; the last row is never read
            "byte_ids": tf.constant(self._byte_ids, tf.int64),  # [256]
            "bytes": tf.constant([self._bytes_of(i) for i in range(self.vocab_size)]),  # [vocab_size]
        }

    @_NOT_AUTOGRAPHED
    def _encode_tf(self, s: tf.Tensor) -> tf.Tensor:
        """[tokens] int32 ids of a scalar string."""
        tables = self._tables()
        ids = tf.gather(tables["byte_ids"], tf.cast(tf.io.decode_raw(s, tf.uint8), tf.int32))  # [bytes]
        word_lengths = _word_lengths(s)  # [words]
        rows = tf.repeat(tf.range(tf.size(word_lengths)), word_lengths)  # [bytes] word of each symbol
        ids, _, _ = tf.while_loop(
            lambda ids, rows, merged: merged,
            lambda ids, rows, merged: _merge_step(ids, rows, tf.size(word_lengths), tables, self._base_vocab_size),
            (ids, rows, tf.size(ids) > 1),
            shape_invariants=(tf.TensorShape([None]), tf.TensorShape([None]), tf.TensorShape([])),
        )
        return tf.cast(ids, tf.int32)

    @_NOT_AUTOGRAPHED
    def _decode_tf(self, ids: tf.Tensor) -> tf.Tensor:
        """The text of [..., tokens] ids up to the first eos (seqio has set everything after it to pad)."""
        ids = tf.cast(ids, tf.int32)
        if self.eos_id is not None:
            after_eos = tf.cumsum(tf.cast(tf.equal(ids, self.eos_id), tf.int32), axis=-1, exclusive=True) > 0
            ids = tf.ragged.boolean_mask(ids, ~after_eos)
        text = tf.strings.reduce_join(tf.gather(self._tables()["bytes"], ids), axis=-1)
        return tf.strings.unicode_transcode(text, "UTF-8", "UTF-8", errors="replace", replacement_char=0xFFFD)

    def __eq__(self, other) -> bool:
        return (
            isinstance(other, ByteBpeVocabulary)
            and self._token_bytes == other._token_bytes
            and self._merged == other._merged
            and self.extra_ids == other.extra_ids
            and self.special == other.special
        )


@_NOT_AUTOGRAPHED
def _word_lengths(s: tf.Tensor) -> tf.Tensor:
    """[words] byte lengths of GPT-2's words of the scalar string `s` (step 1), in RE2, which has no lookahead.

    A NUL mark goes before the last character of every whitespace run of two or more characters followed by a
    non-space (rule c's lookahead), then before every match of the pattern without the lookahead, which never
    matches a mark; the text between marks is the words. (Input NULs become \x01, which splits the same. Bytes
    that are not UTF-8 match nothing and stay with the word before them.)
    """
    s = tf.strings.regex_replace(s, r"\x00", "\x01")
    s = tf.strings.regex_replace(s, f"([{_SPACE}])([{_SPACE}][^{_SPACE}])", "\\1\x00\\2")
    s = tf.strings.regex_replace(s, _WORD_RE2, "\x00\\0")
    lengths = tf.strings.length(tf.strings.split(s, "\x00"))  # [words + empty pieces between marks]
    return tf.boolean_mask(lengths, lengths > 0)


@_NOT_AUTOGRAPHED
def _merge_step(ids, rows, num_words, tables, vocab_size):
    """One BPE iteration over all words: in each word, merge every non-overlapping occurrence of its lowest-ranked
    pair. ids, rows: [symbols] (symbol ids, word index). Returns (ids, rows, whether anything merged)."""
    no_merge = tables["merged"].shape[0] - 1
    positions = tf.range(tf.maximum(tf.size(ids) - 1, 0))  # [pairs]; pair p is (ids[p], ids[p + 1])
    ranks = tables["ranks"].lookup(ids[:-1] * vocab_size + ids[1:])  # [pairs]
    ranks = tf.where(rows[:-1] == rows[1:], ranks, no_merge)  # pairs across two words never merge
    best = tf.math.unsorted_segment_min(ranks, rows[:-1], num_words)  # [words]
    candidate = (ranks == tf.gather(best, rows[:-1])) & (ranks < no_merge)  # [pairs]
    # Consecutive candidates overlap ("a a a" under the merge "a a"): merge the 1st, 3rd, ... of each run.
    run = tf.cumsum(tf.cast(~candidate, tf.int32))  # [pairs]; constant along a run of candidates
    run_start = tf.math.unsorted_segment_min(tf.where(candidate, positions, tf.size(ids)), run, tf.size(ids) + 1)
    chosen = candidate & ((positions - tf.gather(run_start, run)) % 2 == 0)  # [pairs]
    merged = tf.gather(tables["merged"], tf.where(chosen, ranks, no_merge))  # [pairs]
    ids = tf.where(tf.concat([chosen, [False]], 0), tf.concat([merged, [0]], 0), ids)  # left symbol -> merged
    keep = ~tf.concat([[False], chosen], 0)  # drop the right symbol of each merge
    return ids[keep], rows[keep], tf.reduce_any(chosen)


def files_of(path: str) -> tuple[str, str]:
    """(vocab.json, merges.txt) of a directory holding both, or of a vocab.json path."""
    if tf.io.gfile.isdir(path):
        return os.path.join(path, VOCAB_FILE), os.path.join(path, MERGES_FILE)
    return path, os.path.join(os.path.dirname(path), MERGES_FILE)


def read_files(vocab_path: str, merges_path: str) -> tuple[dict[str, int], list[tuple[str, str]]]:
    """The {token: id} of vocab.json and the (a, b) pairs of merges.txt; a file that is not one is one error."""
    for path in (vocab_path, merges_path):
        if not tf.io.gfile.exists(path):
            raise special_tokens.VocabularyFileNotFound(
                f"{path} does not exist; a byte-level BPE vocabulary is a vocab.json with merges.txt beside it"
            )
    try:
        with tf.io.gfile.GFile(vocab_path, "rb") as f:
            vocab = json.loads(f.read().decode("utf-8"))
        ok = isinstance(vocab, dict) and all(isinstance(i, int) for i in vocab.values())
        ok = ok and sorted(vocab.values()) == list(range(len(vocab)))
    except (UnicodeDecodeError, json.JSONDecodeError):
        ok = False
    if not ok:
        raise special_tokens.VocabularyError(
            f"{vocab_path} is not a BPE vocab.json; expected a JSON object mapping each token to its id 0..V-1"
        )
    try:
        with tf.io.gfile.GFile(merges_path, "rb") as f:
            lines = f.read().decode("utf-8").splitlines()
    except UnicodeDecodeError:
        lines = ["not UTF-8"]
    lines = [line for line in lines if line and not line.startswith("#version")]
    merges = [tuple(line.split(" ")) for line in lines]
    bad = next((n for n, merge in enumerate(merges) if len(merge) != 2), None)
    if bad is not None:
        raise special_tokens.VocabularyError(
            f"{merges_path} is not a BPE merges.txt: line {lines[bad]!r} is not two tokens separated by a space"
        )
    return vocab, merges


def train(lines: list[str], out_dir: str, num_pieces: int) -> None:
    """Trains a `num_pieces`-token byte-level BPE with Hugging Face `tokenizers`; writes vocab.json + merges.txt.

    Ids 0-3 are SPECIAL_TOKENS, then the 256 bytes, then the merges in the order learnt. The result is a
    deterministic function of the lines and num_pieces.
    """
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    trainer = trainers.BpeTrainer(
        vocab_size=num_pieces,
        special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(lines, trainer)
    tokenizer.model.save(out_dir)
