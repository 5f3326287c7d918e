"""Masked-language-model corruption: BERT's MLM (token, whole-word and n-gram masking) and ELECTRA's masking.

Both preprocessors take {"targets": tokens} examples (already laid out with [CLS]/[SEP], e.g. by
`language_modeling.full_sentences` or `sentence_pairs.sentence_pairs`) and add
  "inputs":       the corrupted tokens the encoder reads,
  "loss_weights": 1 on the selected positions, 0 elsewhere (a selected token left unchanged still equals its
                  target, so the weights, not `inputs != targets`, say where the loss is).
Other features pass through. Selection never touches padding or the special ids of `ObjectiveIds`.

Randomness comes from stateless ops seeded per example by `seqio.map_over_dataset`, with the example's tokens folded
in (`fold_in_content`). seqio draws those seeds from a random stream zipped with the examples; lmx's tasks run every
preprocessor after the repeat (they have no `seqio.CacheDatasetPlaceholder`), so the seeds follow the example's
position in the repeated stream: each epoch gets fresh masks (RoBERTa's dynamic masking, Liu et al. 2019 section
4.1) and a restored tf.data iterator checkpoint (which saves that stream's position) reproduces them exactly. (BERT's
static masks would need the masking before the repeat, i.e. before a `CacheDatasetPlaceholder`, which seqio forbids
for steps that read the sequence length.)
"""

from __future__ import annotations

import dataclasses
import string
import unicodedata
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
import seqio
import tensorflow as tf

from lmx.config_lib import ConfigError

if TYPE_CHECKING:
    from lmx.data import special_tokens

SENTENCEPIECE_WORD_MARK = "▁"  # SentencePiece's space, on the first piece of a word
WORDPIECE_CONTINUATION = "##"


@dataclasses.dataclass(frozen=True)
class ObjectiveIds:
    """The ids the objectives place or protect. Several may coincide (RoBERTa's </s> is eos and sep)."""

    pad: int  # padding: must be 0, the id seqio pads with
    eos: int  # end of a document or a sequence
    unk: int | None  # unknown piece (None: the vocabulary has none, as byte-level BPE)
    mask: int  # [MASK]
    cls: int  # [CLS]: the first token of an encoder example, read by the pooler
    sep: int  # [SEP]: ends a segment; also separates documents in full-sentence packing
    num_tokens: int  # random replacements are drawn from the ids below this (pieces, not sentinels) ...
    reserved: tuple[int, ...] = ()  # ... that are neither these special ids nor `reserved` (never masked either)

    def __post_init__(self):
        if self.pad != 0:
            raise ValueError(f"ObjectiveIds.pad={self.pad}: seqio pads with 0, so the pad id must be 0")
        if self.num_tokens <= len([i for i in self.protected if i < self.num_tokens]):
            raise ValueError(f"ObjectiveIds.num_tokens={self.num_tokens} leaves no ordinary id to draw")

    @property
    def protected(self) -> tuple[int, ...]:
        """Sorted ids that are never selected for masking nor drawn as random replacements."""
        roles = (self.pad, self.eos, self.unk, self.mask, self.cls, self.sep, *self.reserved)
        return tuple(sorted({i for i in roles if i is not None}))

    @classmethod
    def of_vocabulary(cls, special: special_tokens.SpecialIds, vocab_size: int) -> ObjectiveIds:
        """The ids of a vocabulary's special roles (`lmx.data.special_tokens.SpecialIds`): [SEP] is its eos (BERT's
        convention), random replacements come from the ids below its sentinels, and its bos is never masked."""
        for role in ("eos", "cls", "mask"):
            if getattr(special, role) is None:
                raise ConfigError(
                    f"the vocabulary has no {role} token, which the encoder objectives need; name one of its tokens "
                    f"with config.data.special_tokens.{role}"
                )
        return cls(
            pad=special.pad,
            eos=special.eos,
            unk=special.unk,
            mask=special.mask,
            cls=special.cls,
            sep=special.eos,
            num_tokens=vocab_size - len(special.sentinels),
            reserved=() if special.bos is None else (special.bos,),
        )


def is_maskable(tokens: tf.Tensor, ids: ObjectiveIds) -> tf.Tensor:
    """[L] bool: the tokens masking may select (neither padding nor a special id)."""
    special = tf.constant(ids.protected, dtype=tokens.dtype)
    return tf.reduce_all(tokens[:, None] != special[None, :], axis=1)


def random_ordinary_tokens(length: tf.Tensor, seed: tf.Tensor, ids: ObjectiveIds) -> tf.Tensor:
    """[length] ids drawn uniformly from the ordinary ids in [0, num_tokens) (special ids excluded)."""
    below = [i for i in ids.protected if i < ids.num_tokens]
    draws = tf.random.stateless_uniform(
        [length], seed=seed, minval=0, maxval=ids.num_tokens - len(below), dtype=tf.int32
    )
    # Map the draw r in [0, n_ordinary) to the r-th ordinary id: step over each special id at or below it, in order.
    for special in below:
        draws += tf.cast(draws >= special, tf.int32)
    return draws


def marked_word_starts(pieces: Sequence[str], mark: str = SENTENCEPIECE_WORD_MARK) -> np.ndarray:
    """[len(pieces)] bool: the pieces that begin a word, in a vocabulary that marks a word's first piece with `mark`
    ("▁" in SentencePiece, "Ġ" in GPT-2/RoBERTa byte-level BPE).

    Punctuation on its own begins a word too (ALBERT's rule), so that "end." masks "end" and "." as two words, as
    BERT's WordPiece (which splits punctuation off before word pieces) does.
    """
    return np.array([p.startswith(mark) or all(_is_punctuation(c) for c in p) for p in pieces], dtype=bool)


def sentencepiece_word_starts(vocabulary: seqio.SentencePieceVocabulary) -> np.ndarray:
    """[vocab_size] bool: which ids begin a word (`marked_word_starts` with "▁"); control pieces and extra ids
    (sentinels) stand alone."""
    model = vocabulary.tokenizer
    pieces = [model.id_to_piece(i) for i in range(model.get_piece_size())]
    starts = np.ones(vocabulary.vocab_size, dtype=bool)  # extra ids beyond the pieces stand alone
    starts[: len(pieces)] = marked_word_starts(pieces)
    for i in range(len(pieces)):
        starts[i] |= model.is_control(i) or model.is_unknown(i)
    return starts


def wordpiece_word_starts(pieces: Sequence[str]) -> np.ndarray:
    """[len(pieces)] bool: WordPiece ids that begin a word (all but the "##" continuations)."""
    return np.array([not piece.startswith(WORDPIECE_CONTINUATION) for piece in pieces], dtype=bool)


def _is_punctuation(char: str) -> bool:
    return char in string.punctuation or unicodedata.category(char).startswith("P")


def albert_ngram_probs(max_n: int = 3) -> tuple[float, ...]:
    """p(n) proportional to 1/n for n = 1..max_n: ALBERT's n-gram masking (Lan et al. 2020, section 4.1; max 3)."""
    weights = [1.0 / n for n in range(1, max_n + 1)]
    return tuple(w / sum(weights) for w in weights)


def spanbert_span_probs(p: float = 0.2, max_n: int = 10) -> tuple[float, ...]:
    """Geometric(p) span lengths clipped to max_n words: SpanBERT's (Joshi et al. 2020, section 3.1; mean 3.8)."""
    weights = [p * (1 - p) ** (n - 1) for n in range(1, max_n + 1)]
    return tuple(w / sum(weights) for w in weights)


def masking_units(
    tokens: tf.Tensor,
    maskable: tf.Tensor,
    seed: tf.Tensor,
    word_starts: tf.Tensor | None = None,
    ngram_probs: tf.Tensor | None = None,
) -> tf.Tensor:
    """[L] bool: where each masking unit (a token, a word, or an n-gram of words) begins; units never cross a
    special token. `word_starts` is a [vocab] bool table; `ngram_probs` [N] the probabilities of 1..N words."""
    after_special = tf.concat([[True], ~maskable[:-1]], axis=0)
    if word_starts is None:
        word_start = maskable  # every token is a word
    else:
        word_start = maskable & (tf.gather(word_starts, tokens) | after_special)
    if ngram_probs is None:
        return word_start
    # N-grams: the words cut into consecutive runs whose lengths are drawn i.i.d. from ngram_probs, so every word is
    # in exactly one run and the runs' lengths follow the distribution.
    length = tf.size(tokens)
    logits = tf.math.log(ngram_probs)[None, :]
    run_lengths = tf.random.stateless_categorical(logits, length, seed=seed, dtype=tf.int32)[0] + 1  # [L]
    run_starts = tf.math.cumsum(run_lengths, exclusive=True)  # [L] word index where each run begins
    run_start_words = tf.boolean_mask(run_starts, run_starts < length)
    starts_run = tf.scatter_nd(run_start_words[:, None], tf.ones_like(run_start_words), [length])  # [L] per word
    word_index = tf.math.cumsum(tf.cast(word_start, tf.int32)) - 1  # [L] which word each token is in
    word_begins_run = tf.gather(starts_run, tf.maximum(word_index, 0)) > 0
    return maskable & ((word_start & word_begins_run) | after_special)


def select_units(unit_start: tf.Tensor, maskable: tf.Tensor, budget: tf.Tensor, priority: tf.Tensor) -> tf.Tensor:
    """[L] bool: whole units taken in the order of `priority` ([L]: a unit's is its first token's, lowest first)
    while they fit in `budget` tokens.

    BERT's greedy rule (create_pretraining_data.py, whole-word and n-gram masking alike): walk the units in a random
    order and take each one that still fits, skipping those that would overflow. Vectorised: each round drops the
    units longer than the remaining budget (they can never fit again), takes the longest prefix of the rest that
    fits, and skips the first unit after it; rounds repeat until nothing fits.
    """
    unit_id = tf.math.cumsum(tf.cast(unit_start, tf.int32)) - 1  # [L]
    num_units = tf.reduce_sum(tf.cast(unit_start, tf.int32))
    owner = tf.where(maskable, unit_id, num_units)  # unmaskable tokens go to a dummy unit, dropped below
    lengths = tf.math.unsorted_segment_sum(tf.ones_like(owner), owner, num_units + 1)[:num_units]  # [U]
    order = tf.argsort(tf.boolean_mask(priority, unit_start))  # [U] unit indices, first taken first
    ordered_lengths = tf.gather(lengths, order)

    def fits_more(alive, taken, budget):
        return tf.reduce_any(alive) & (budget > 0)

    def round_(alive, taken, budget):
        alive &= ordered_lengths <= budget
        used = tf.math.cumsum(tf.where(alive, ordered_lengths, 0))  # [U]
        fits = alive & (used <= budget)
        overflow = alive & (used > budget)
        first_overflow = overflow & (tf.math.cumsum(tf.cast(overflow, tf.int32)) == 1)
        spent = tf.reduce_sum(tf.where(fits, ordered_lengths, 0))
        return alive & ~fits & ~first_overflow, taken | fits, budget - spent

    alive = tf.ones([num_units], tf.bool)
    _, taken, _ = tf.while_loop(fits_more, round_, (alive, tf.zeros([num_units], tf.bool), budget))
    taken_by_unit = tf.scatter_nd(order[:, None], taken, [num_units])  # back from the random order
    return maskable & tf.gather(tf.concat([taken_by_unit, [False]], axis=0), owner)


def corrupt(
    tokens: tf.Tensor,
    selected: tf.Tensor,
    seeds: tf.Tensor,
    ids: ObjectiveIds,
    mask_prob: float,
    random_prob: float,
) -> tf.Tensor:
    """[L] encoder inputs: each selected token independently becomes [MASK] (mask_prob), a random ordinary token
    (random_prob) or stays (the rest); unselected tokens stay."""
    u = tf.random.stateless_uniform(tf.shape(tokens), seed=seeds[0])
    random_tokens = random_ordinary_tokens(tf.size(tokens), seeds[1], ids)
    inputs = tf.where(selected & (u >= mask_prob) & (u < mask_prob + random_prob), random_tokens, tokens)
    return tf.where(selected & (u < mask_prob), tf.constant(ids.mask, tokens.dtype), inputs)


# Plain TF ops and explicit tf.while_loops: autograph's conversion (tf.data's default) would only slow tracing.
@tf.autograph.experimental.do_not_convert
def mask_tokens(
    tokens: tf.Tensor,
    seeds: tf.Tensor,
    ids: ObjectiveIds,
    rate: float,
    mask_prob: float,
    random_prob: float,
    word_starts: tf.Tensor | None = None,
    ngram_probs: tf.Tensor | None = None,
) -> tuple[tf.Tensor, tf.Tensor]:
    """(inputs, selected) of one [L] sequence; see `mlm` for the steps. `seeds`: [4, 2]."""
    maskable = is_maskable(tokens, ids)
    units = masking_units(tokens, maskable, seeds[0], word_starts, ngram_probs)
    num_maskable = tf.reduce_sum(tf.cast(maskable, tf.float32))
    # BERT: max(1, round(rate * tokens)) tokens; tf.round rounds half to even like BERT's Python round().
    budget = tf.cast(tf.maximum(tf.round(rate * num_maskable), tf.minimum(num_maskable, 1.0)), tf.int32)
    priority = tf.random.stateless_uniform(tf.shape(tokens), seed=seeds[1])  # a uniformly random order of units
    selected = select_units(units, maskable, budget, priority)
    return corrupt(tokens, selected, seeds[2:], ids, mask_prob, random_prob), selected


def check_rates(rate: float, mask_prob: float, random_prob: float) -> None:
    """Refuses masking rates outside (0, 1) and replacement probabilities that do not leave a valid split."""
    if not 0 < rate < 1:
        raise ValueError(f"the masking rate must lie in (0, 1), got {rate}")
    if mask_prob < 0 or random_prob < 0 or mask_prob + random_prob > 1 + 1e-9:
        raise ValueError(
            f"mask_prob={mask_prob} and random_prob={random_prob} must be >= 0 and sum to at most 1 (the rest of the "
            "selected tokens stay unchanged)"
        )


def fold_in_content(seeds: Sequence[tf.Tensor], tokens: tf.Tensor) -> tf.Tensor:
    """[n, 2] an example's seeds with a fingerprint of its tokens folded in.

    seqio draws the per-example seeds from one random stream per `get_dataset` seed, so the input shards of a global
    batch (and the tasks of a mixture), all read with data.seed, get the same seeds at the same stream position:
    without the content their rows would share mask positions.
    """
    key = tf.bitcast(tf.fingerprint(tf.cast(tokens, tf.int32)[None, :])[0], tf.int64)
    return tf.stack([tf.random.experimental.stateless_fold_in(seed, key) for seed in seeds])


@seqio.map_over_dataset(num_seeds=4)
def _mask_example(example, seeds, **kwargs):
    inputs, selected = mask_tokens(example["targets"], fold_in_content(seeds, example["targets"]), **kwargs)
    return {**example, "inputs": inputs, "loss_weights": tf.cast(selected, tf.int32)}


def mlm(
    dataset: tf.data.Dataset,
    *,
    ids: ObjectiveIds,
    rate: float = 0.15,
    mask_prob: float = 0.8,
    random_prob: float = 0.1,
    word_starts: np.ndarray | None = None,
    ngram_probs: Sequence[float] | None = None,
) -> tf.data.Dataset:
    """BERT's masked-LM corruption (Devlin et al. 2019, section 3.1 "Task #1: Masked LM" and appendix A.1).

    1. Maskable tokens: all but padding and `ids.protected` ([CLS], [SEP], [MASK], eos, unk, reserved).
    2. Units: each maskable token; with `word_starts` ([vocab] bool, e.g. `sentencepiece_word_starts`) whole
       words (whole-word masking, BERT's 2019 release); with `ngram_probs` as well (e.g. `albert_ngram_probs(3)`,
       ALBERT section 4.1, or `spanbert_span_probs()`) runs of n words, n drawn from those probabilities. Units
       end at special tokens.
    3. Budget: round(rate x maskable tokens) tokens, at least 1 (rate 0.15 in the paper).
    4. Selection: units in a uniformly random order, each taken if it still fits the budget (BERT's greedy rule),
       so whole words and n-grams are never split.
    5. Replacement, per selected token: [MASK] with mask_prob (0.8), a uniformly random ordinary token with
       random_prob (0.1), unchanged otherwise (0.1).
    6. "loss_weights" = 1 exactly on the selected tokens; "targets" keep the original tokens.
    """
    check_rates(rate, mask_prob, random_prob)
    return _mask_example(
        dataset,
        ids=ids,
        rate=rate,
        mask_prob=mask_prob,
        random_prob=random_prob,
        word_starts=None if word_starts is None else tf.constant(word_starts, tf.bool),
        ngram_probs=None if ngram_probs is None else tf.constant(ngram_probs, tf.float32),
    )


def electra_mask(
    dataset: tf.data.Dataset, *, ids: ObjectiveIds, rate: float = 0.15, mask_prob: float = 1.0
) -> tf.data.Dataset:
    """ELECTRA's generator input (Clark et al. 2020, section 2 and appendix A).

    1. Maskable tokens as in `mlm` (never padding or special ids).
    2. Selection: round(rate x maskable tokens) positions uniformly at random (k = 15% of the tokens; the paper
       writes ceil(0.15 n), the released code rounds).
    3. Every selected position becomes [MASK] (mask_prob = 1.0, the paper's description: no random or unchanged
       tokens; the released code keeps 15% of them unchanged, mask_prob = 0.85).
    4. "loss_weights" = the selected positions (where the generator predicts and its samples replace the input);
       "targets" = the original tokens, against which the discriminator's "replaced" labels are computed.
    """
    check_rates(rate, mask_prob, 0.0)
    return _mask_example(
        dataset,
        ids=ids,
        rate=rate,
        mask_prob=mask_prob,
        random_prob=0.0,
        word_starts=None,
        ngram_probs=None,
    )
