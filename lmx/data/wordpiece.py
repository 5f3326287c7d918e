"""BERT's WordPiece tokenizer (Devlin et al. 2019, section 3) over a vocab.txt, as a seqio Vocabulary.

Encoding, as BERT's reference tokenizer and Hugging Face's BertTokenizer (both paths below do the same):
  1. Clean: drop U+0000, U+FFFD and control, format, private-use and surrogate characters (Cc Cf Co Cs) except
     \\t \\n \\r; every whitespace character becomes a space.
  2. Put spaces around CJK ideographs, so that each is a word.
  3. With lower_case (BERT "uncased"): NFD, drop combining marks (Mn: the accents), lower-case character by character
     (no final-sigma rule).
  4. Split on spaces; each punctuation character (ASCII !-/ :-@ [-` {-~ and Unicode P*) is a word of its own.
  5. WordPiece: a word of more than 100 characters is [UNK]; otherwise greedy longest match first from its start,
     with pieces after the first spelled "##piece"; a word with a remainder that no piece matches is [UNK] whole.
Decoding joins the pieces with spaces and glues "##" pieces to the piece before them.

The TF path (seqio's encode_tf, used in tf.data) runs steps 1-4 as RE2/ICU string ops and step 5 with
tensorflow-text's FastWordpieceTokenizer; no py_function, so tf.data iterators over it can be checkpointed. The
Python path writes the same steps with `unicodedata`. seqio.BertWordPieceVocabulary is not used: its encode_tf pads
the pieces of each word into a dense [words, pieces] tensor (inserting zeros) and its decode leaves "##" pieces apart,
and its lower-casing (NFKC case folding) differs from BERT's (e.g. "ß" -> "ss", "ﬁ" -> "fi").
"""

from __future__ import annotations

import os
import unicodedata

import seqio
import tensorflow as tf
import tensorflow_text as tf_text

from lmx.data import special_tokens

# Plain TF ops without Python control flow on tensors: autograph has nothing to convert here, and converting
# tensorflow-text's ragged ops costs seconds of tracing per tf.data pipeline.
_NOT_AUTOGRAPHED = tf.autograph.experimental.do_not_convert
VOCAB_FILE = "vocab.txt"
SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")  # ids 0-4 of a vocabulary lmx trains
MAX_WORD_CHARS = 100  # longer words are [UNK] (BERT's max_input_chars_per_word)
SUFFIX = "##"
# CJK Unified Ideographs blocks and their extensions and compatibility blocks, as in BERT's _is_chinese_char.
_CJK_RANGES = (
    (0x4E00, 0x9FFF),
    (0x3400, 0x4DBF),
    (0x20000, 0x2A6DF),
    (0x2A700, 0x2B73F),
    (0x2B740, 0x2B81F),
    (0x2B820, 0x2CEAF),
    (0xF900, 0xFAFF),
    (0x2F800, 0x2FA1F),
)
_CJK = "".join(rf"\x{{{a:x}}}-\x{{{b:x}}}" for a, b in _CJK_RANGES)
_ASCII_PUNCT = r"!-/:-@\[-`{-~"
# Step 1 in RE2: C* except \t \n \r (and U+0000, U+FFFD); then Unicode's White_Space characters that survive it.
_DROPPED = r"[\x{0}-\x{8}\x{b}\x{c}\x{e}-\x{1f}\x{7f}-\x{9f}\p{Cf}\p{Co}\p{Cs}\x{fffd}]"
_WHITESPACE = r"[\t\n\r \p{Z}]"


def _drop(char: str) -> bool:
    return char in "\x00\ufffd" or (unicodedata.category(char) in ("Cc", "Cf", "Co", "Cs") and char not in "\t\n\r")


def _is_whitespace(char: str) -> bool:
    return char in "\t\n\r " or unicodedata.category(char) in ("Zs", "Zl", "Zp")


def _is_cjk(char: str) -> bool:
    return any(a <= ord(char) <= b for a, b in _CJK_RANGES)


def _is_punctuation(char: str) -> bool:
    cp = ord(char)
    return (
        33 <= cp <= 47 or 58 <= cp <= 64 or 91 <= cp <= 96 or 123 <= cp <= 126 or unicodedata.category(char)[0] == "P"
    )


def split_words(text: str, lower_case: bool) -> list[str]:
    """Steps 1-4 in Python: the words of `text`."""
    text = "".join(" " if _is_whitespace(c) else f" {c} " if _is_cjk(c) else c for c in text if not _drop(c))
    if lower_case:
        text = unicodedata.normalize("NFD", text)
        text = "".join(c.lower() for c in text if unicodedata.category(c) != "Mn")  # per character: no final sigma
    words = []
    for chunk in text.split(" "):
        word = ""
        for c in chunk:
            if _is_punctuation(c):
                words.extend([word, c] if word else [c])
                word = ""
            else:
                word += c
        if word:
            words.append(word)
    return words


@_NOT_AUTOGRAPHED
def split_words_tf(texts: tf.Tensor, lower_case: bool) -> tf.RaggedTensor:
    """Steps 1-4 in TF ops: [n] strings -> [n, (words)] their words."""
    texts = tf.strings.regex_replace(texts, _DROPPED, "")
    texts = tf.strings.regex_replace(texts, _WHITESPACE, " ")
    texts = tf.strings.regex_replace(texts, f"([{_CJK}])", r" \1 ")
    if lower_case:
        texts = tf_text.normalize_utf8(texts, "NFD")
        texts = tf.strings.regex_replace(texts, r"\p{Mn}", "")
        texts = tf.strings.regex_replace(texts, "Σ", "σ")  # tf.strings.lower would apply the final-sigma rule
        texts = tf.strings.lower(texts, encoding="utf-8")
    texts = tf.strings.regex_replace(texts, f"([{_ASCII_PUNCT}\\p{{P}}])", r" \1 ")  # punctuation: words alone
    words = tf.strings.split(texts, " ")  # [n, (words and empty strings between spaces)]
    return tf.ragged.boolean_mask(words, tf.strings.length(words) > 0)


class WordPieceVocabulary(special_tokens.SpecialIdsOfVocabulary, seqio.Vocabulary):
    """WordPiece over BERT's vocab.txt (one token per line, id = line number); sentinels on top of it."""

    def __init__(self, path: str, lower_case: bool, extra_ids: int = 0, token_names: dict[str, str] | None = None):
        """`path`: a vocab.txt, or a directory holding one. `lower_case`: BERT uncased (step 3).
        `token_names` overrides the token of special roles (see special_tokens.resolve)."""
        self.path = path
        self.lower_case = lower_case
        self.tokens = read_file(path)
        self._ids = {token: i for i, token in reversed(list(enumerate(self.tokens)))}  # first line wins
        conventions = special_tokens.CONVENTIONS["wordpiece"]
        self.special = special_tokens.resolve(
            "wordpiece", self._ids, token_names or {}, conventions, len(self.tokens), extra_ids, path
        )
        self._tf = None
        super().__init__(extra_ids=extra_ids)

    @property
    def _base_vocab_size(self) -> int:
        return len(self.tokens)

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state["_tf"] = None  # TF tables are built again on first use after unpickling
        return state

    def _word_pieces(self, word: str) -> list[int]:
        """Step 5 for one word."""
        if len(word) > MAX_WORD_CHARS:
            return [self.unk_id]
        pieces, start = [], 0
        while start < len(word):
            prefix = SUFFIX if start else ""
            end = next((e for e in range(len(word), start, -1) if prefix + word[start:e] in self._ids), None)
            if end is None:
                return [self.unk_id]
            pieces.append(self._ids[prefix + word[start:end]])
            start = end
        return pieces

    def _encode(self, s: str) -> list[int]:
        return [i for word in split_words(s, self.lower_case) for i in self._word_pieces(word)]

    def _decode(self, ids) -> str:
        ids = [int(i) for i in ids]
        if self.eos_id in ids:  # seqio's contract: through the first eos
            ids = ids[: ids.index(self.eos_id) + 1]
        return " ".join(self.tokens[i] for i in ids).replace(" " + SUFFIX, "")  # seqio made sentinels [UNK]

    def _tables(self) -> dict:
        """The TF WordPiece model and token strings, built eagerly on first use so that every graph can capture them."""
        if self._tf is None:
            with tf.init_scope():
                self._tf = {
                    "wordpiece": tf_text.FastWordpieceTokenizer(
                        vocab=self.tokens,
                        suffix_indicator=SUFFIX,
                        max_bytes_per_word=4 * MAX_WORD_CHARS,  # the character limit is applied before
                        token_out_type=tf.int32,
                        unknown_token=self.tokens[self.unk_id],
                        no_pretokenization=True,
                    ),
                    "tokens": tf.constant(self.tokens),  # [tokens]; seqio has made sentinels [UNK]
                }
        return self._tf

    @_NOT_AUTOGRAPHED
    def _encode_tf(self, s: tf.Tensor) -> tf.Tensor:
        """[pieces] int32 ids of a scalar string."""
        words = split_words_tf(tf.reshape(s, [1]), self.lower_case).flat_values  # [words]
        too_long = tf.strings.length(words, unit="UTF8_CHAR") > MAX_WORD_CHARS
        words = tf.where(too_long, self.tokens[self.unk_id], words)  # the unk token itself: one piece, unk
        return self._tables()["wordpiece"].tokenize(words).flat_values  # [pieces]

    @_NOT_AUTOGRAPHED
    def _decode_tf(self, ids: tf.Tensor) -> tf.Tensor:
        """The text of [..., pieces] ids up to the first eos (seqio has set everything after it to pad)."""
        ids = tf.cast(ids, tf.int32)
        after_eos = tf.cumsum(tf.cast(tf.equal(ids, self.eos_id), tf.int32), axis=-1, exclusive=True) > 0
        tokens = tf.gather(self._tables()["tokens"], tf.ragged.boolean_mask(ids, ~after_eos))
        return tf.strings.regex_replace(tf.strings.reduce_join(tokens, axis=-1, separator=" "), " " + SUFFIX, "")

    def __eq__(self, other) -> bool:
        return (
            isinstance(other, WordPieceVocabulary)
            and self.tokens == other.tokens
            and self.lower_case == other.lower_case
            and self.extra_ids == other.extra_ids
            and self.special == other.special
        )


def file_of(path: str) -> str:
    """The vocab.txt of `path` (a vocab.txt, or a directory holding one)."""
    return os.path.join(path, VOCAB_FILE) if tf.io.gfile.isdir(path) else path


def read_file(path: str) -> list[str]:
    """The tokens of a vocab.txt, one per line; a file that is not one is one VocabularyError."""
    path = file_of(path)
    if not tf.io.gfile.exists(path):
        raise special_tokens.VocabularyFileNotFound(f"{path} does not exist; expected a WordPiece vocab.txt")
    with tf.io.gfile.GFile(path, "rb") as f:
        data = f.read()
    try:
        tokens = data.decode("utf-8").split("\n")
    except UnicodeDecodeError as e:
        raise special_tokens.VocabularyError(
            f"{path} is not a WordPiece vocab.txt: byte {e.start} is not UTF-8; expected one token per line"
        ) from None
    if tokens and tokens[-1] == "":
        tokens.pop()  # the newline ending the last line
    bad = next((n for n, token in enumerate(tokens) if not token or any(c.isspace() for c in token)), None)
    if bad is not None or not tokens:
        what = f"line {bad + 1} ({tokens[bad]!r}) is not one token" if tokens else "it is empty"
        raise special_tokens.VocabularyError(
            f"{path} is not a WordPiece vocab.txt: {what}; expected one token per line, without spaces"
        )
    return tokens


def train(lines: list[str], out_path: str, num_pieces: int, lower_case: bool) -> None:
    """Trains a `num_pieces`-token WordPiece vocabulary with Hugging Face `tokenizers` (BERT's normalization and
    pre-tokenization, steps 1-4); writes vocab.txt. Ids 0-4 are SPECIAL_TOKENS, the others sorted by length."""
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, trainers

    tokenizer = Tokenizer(models.WordPiece(unk_token="[UNK]", continuing_subword_prefix=SUFFIX))
    tokenizer.normalizer = normalizers.BertNormalizer(lowercase=lower_case)
    tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    trainer = trainers.WordPieceTrainer(
        vocab_size=num_pieces,
        special_tokens=list(SPECIAL_TOKENS),
        continuing_subword_prefix=SUFFIX,
        show_progress=False,
    )
    tokenizer.train_from_iterator(lines, trainer)
    # The trainer's ids follow a hash map's order, which changes from run to run: sort for a deterministic file
    # (WordPiece reads only which tokens exist; the special tokens keep ids 0-4).
    rest = sorted(set(tokenizer.get_vocab()) - set(SPECIAL_TOKENS), key=lambda t: (len(t.removeprefix(SUFFIX)), t))
    with open(out_path, "w", encoding="utf-8") as f:
        f.writelines(token + "\n" for token in [*SPECIAL_TOKENS, *rest])
