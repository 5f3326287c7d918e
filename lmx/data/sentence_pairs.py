"""Sentence-pair examples: BERT's next-sentence prediction (NSP) and ALBERT's sentence-order prediction (SOP).

`sentence_pairs` turns {"text": document} examples into
  "targets":     [CLS] A [SEP] B [SEP]  (unmasked; `masking.mlm` adds "inputs" and "loss_weights"),
  "token_types": 0 on [CLS], A and the first [SEP]; 1 on B and the last [SEP],
  "pair_label":  [1] int32; NSP: 1 = B is a random segment of another document, 0 = B follows A;
                 SOP: 1 = the two consecutive segments are swapped, 0 = in order.
A "sentence" is what `split_sentences` cuts; a segment is a run of whole sentences of one document.
"""

from __future__ import annotations

from collections.abc import Mapping

import seqio
import tensorflow as tf

from lmx.data.masking import ObjectiveIds, fold_in_content

PAIR_TASKS = ("nsp", "sop")
# Sentence end: . ! or ? (with any closing quotes or brackets) followed by white space. Paragraph breaks (newlines)
# end sentences too. A rough rule (it also cuts after "Mr."), which only moves where segments may split.
_SENTENCE_END = r"""([.!?]["'”’)\]]*)[ \t]+"""


def split_sentences(text: tf.Tensor) -> tf.Tensor:
    """[num_sentences] nonempty strings of a document (BERT's input files had one sentence per line)."""
    lines = tf.strings.split(tf.strings.regex_replace(text, _SENTENCE_END, "\\1\n"), sep="\n")
    lines = tf.strings.strip(lines)
    return tf.boolean_mask(lines, tf.strings.length(lines) > 0)


def _encode_sentences(vocabulary: seqio.Vocabulary, sentences: tf.Tensor) -> tf.RaggedTensor:
    """[S, None] ids of [S] sentences. seqio's encode_tf takes one string; SentencePiece's also takes a batch (several
    times faster), the other kinds (WordPiece, byte-level BPE) encode sentence by sentence."""
    if isinstance(vocabulary, seqio.SentencePieceVocabulary):
        return vocabulary.encode_tf(sentences)
    return tf.map_fn(
        lambda sentence: tf.cast(vocabulary.encode_tf(sentence), tf.int32),
        sentences,
        fn_output_signature=tf.RaggedTensorSpec([None], tf.int32, ragged_rank=0),
    )


def _tokenize_sentences(vocabulary: seqio.Vocabulary):
    def tokenize(example):
        ids = _encode_sentences(vocabulary, split_sentences(example["text"]))  # [S, None] ragged
        ids = tf.ragged.boolean_mask(ids, ids.row_lengths() > 0)
        return {"tokens": tf.cast(ids.flat_values, tf.int32), "sentence_lengths": tf.cast(ids.row_lengths(), tf.int32)}

    return tokenize


def truncation(len_a: tf.Tensor, len_b: tf.Tensor, max_tokens: int) -> tuple[tf.Tensor, tf.Tensor]:
    """(tokens cut from A, tokens cut from B) by BERT's truncate_seq_pair, in closed form.

    BERT removes one token at a time from the longer segment (B on a tie) until len_a + len_b <= max_tokens: the
    longer one is cut down to the other's length first, then the rest alternates, B first.
    """
    excess = tf.maximum(len_a + len_b - max_tokens, 0)
    first = tf.minimum(excess, tf.abs(len_a - len_b))  # taken from the longer segment alone
    rest = excess - first
    a_longer = len_a > len_b
    cut_a = tf.where(a_longer, first, 0) + rest // 2
    cut_b = tf.where(a_longer, 0, first) + rest - rest // 2
    return cut_a, cut_b


def _pair_spans(
    sentence_lengths: tf.RaggedTensor, seed: tf.Tensor, task: str, max_tokens: int, short_seq_prob: float
) -> tf.Tensor:
    """[E, 5] int32 rows (A begin, A end, B begin, B end, label): token offsets into the group's flat tokens.

    `sentence_lengths`: [G, None] tokens per sentence of each document of the group. Follows BERT's
    create_instances_from_document over every document at once (see `sentence_pairs` for the steps): the example
    that a chunk starting at sentence s would make is computed for every s at once, then a short loop follows the
    chain of chunk starts from the first sentence.
    """
    lengths = sentence_lengths.flat_values  # [S]
    num_sentences = tf.size(lengths)
    doc = tf.cast(sentence_lengths.value_rowids(), tf.int32)  # [S]
    bounds = tf.cast(sentence_lengths.row_splits, tf.int32)  # [G + 1] first sentence of each document
    doc_begin, doc_end = tf.gather(bounds, doc), tf.gather(bounds, doc + 1)  # [S] sentence range of its document
    offsets = tf.concat([[0], tf.math.cumsum(lengths)], axis=0)  # [S + 1] token offset of each sentence
    start = tf.range(num_sentences)  # [S] a chunk may start at any sentence
    u = tf.random.stateless_uniform([5, num_sentences], seed=seed)  # draws of the chunk starting there

    def scaled(draw, n):  # uniform integer in [0, n)
        return tf.cast(draw * tf.cast(n, tf.float32), tf.int32)

    def first_reaching(begin, needed):
        """[S] the sentence j > begin where sentences [begin, j) first hold `needed` tokens, capped at the end of the
        document: BERT adds sentences until the target is reached or the document ends."""
        j = tf.searchsorted(offsets, tf.gather(offsets, begin) + needed, side="left")
        return tf.maximum(tf.minimum(j, tf.gather(doc_end, begin)), begin + 1)

    target = tf.where(u[0] < short_seq_prob, 2 + scaled(u[1], max_tokens - 1), max_tokens)  # [S], [2, max_tokens]
    stop = first_reaching(start, target)
    num = stop - start  # sentences in the chunk
    chunk_begin, chunk_end = offsets[:-1], tf.gather(offsets, stop)
    label = u[2] < 0.5
    # A = the first a_sentences sentences (uniform in [1, num - 1]); a one-sentence chunk is split at a uniform
    # token instead, so that both segments come from it.
    a_sentences = 1 + scaled(u[3], num - 1)
    token_split = chunk_begin + 1 + scaled(u[3], chunk_end - chunk_begin - 1)
    a_end = tf.where(num >= 2, tf.gather(offsets, tf.minimum(start + a_sentences, num_sentences)), token_split)
    valid = chunk_end - chunk_begin >= 2
    if task == "nsp":
        # Random next: sentences of another document of the group, from a uniform start sentence until they hold
        # target - len(A) tokens or that document ends. With a single document, its own sentences.
        own = doc_end - doc_begin
        others = num_sentences - own
        draw = scaled(u[4], tf.where(others > 0, others, num_sentences))
        other = tf.where((others > 0) & (draw >= doc_begin), draw + own, draw)
        other_stop = first_reaching(other, tf.maximum(target - (a_end - chunk_begin), 1))
        b_begin = tf.where(label, tf.gather(offsets, other), a_end)
        b_end = tf.where(label, tf.gather(offsets, other_stop), chunk_end)
        rows = tf.stack([chunk_begin, a_end, b_begin, b_end], axis=1)
        # BERT puts the unused sentences of a chunk whose B was replaced back for the next chunk.
        next_start = tf.where(label & (num >= 2), start + a_sentences, stop)
    else:  # sop: the same two consecutive segments, swapped half of the time
        in_order = tf.stack([chunk_begin, a_end, a_end, chunk_end], axis=1)
        swapped = tf.stack([a_end, chunk_end, chunk_begin, a_end], axis=1)
        rows = tf.where(label[:, None], swapped, in_order)
        next_start = stop
    rows = tf.concat([rows, tf.cast(label, tf.int32)[:, None]], axis=1)  # [S, 5]

    def follow(s, chunk_starts):
        return next_start[s], chunk_starts.write(chunk_starts.size(), s)

    chunk_starts = tf.TensorArray(tf.int32, size=0, dynamic_size=True, element_shape=[])
    _, chunk_starts = tf.while_loop(lambda s, _: s < num_sentences, follow, (0, chunk_starts))
    chunk_starts = chunk_starts.stack()  # [E]
    return tf.gather(rows, tf.boolean_mask(chunk_starts, tf.gather(valid, chunk_starts)))


@tf.autograph.experimental.do_not_convert  # plain TF ops and an explicit tf.while_loop: nothing to convert
def _pairs_of_group(group, seeds, task: str, length: int, short_seq_prob: float, ids: ObjectiveIds):
    tokens = group["tokens"].flat_values  # [T] every token of the group's documents, in order
    spans = _pair_spans(group["sentence_lengths"], seeds[0], task, length - 3, short_seq_prob)  # [E, 5]
    a_begin, a_end, b_begin, b_end, label = tf.unstack(spans, axis=1)  # [E] each
    cut_a, cut_b = truncation(a_end - a_begin, b_end - b_begin, length - 3)
    # BERT cuts each token from the front or the back with equal chance: the number from the front is binomial.
    halves = tf.random.stateless_binomial(
        [2, tf.size(label)], seeds[1], tf.cast(tf.stack([cut_a, cut_b]), tf.float32), 0.5, output_dtype=tf.int32
    )
    a = tf.gather(tokens, tf.ragged.range(a_begin + halves[0], a_end - (cut_a - halves[0])))  # [E, None]
    b = tf.gather(tokens, tf.ragged.range(b_begin + halves[1], b_end - (cut_b - halves[1])))  # [E, None]
    column = tf.ones_like(label)[:, None]  # [E, 1]
    cls = tf.RaggedTensor.from_tensor(column * ids.cls)
    sep = tf.RaggedTensor.from_tensor(column * ids.sep)
    targets = tf.concat([cls, a, sep, b, sep], axis=1)  # [E, None]
    position = tf.ragged.range(targets.row_lengths())
    token_types = tf.cast(position >= tf.cast(a.row_lengths() + 2, position.dtype)[:, None], tf.int32)
    return {"targets": targets, "token_types": token_types, "pair_label": label[:, None]}


@seqio.map_over_dataset(num_seeds=2)
def _make_pairs(group, seeds, **kwargs):
    return _pairs_of_group(group, fold_in_content(seeds, group["tokens"].flat_values), **kwargs)


def sentence_pairs(
    dataset: tf.data.Dataset,
    sequence_length: Mapping[str, int],
    output_features: Mapping[str, seqio.Feature],
    *,
    ids: ObjectiveIds,
    task: str,
    short_seq_prob: float = 0.1,
    documents_per_group: int = 32,
) -> tf.data.Dataset:
    """NSP pairs (Devlin et al. 2019, section 3.1 "Task #2" and appendix A.2) or SOP pairs (Lan et al. 2020,
    section 3.1 and 4.1), built as BERT's create_pretraining_data.py does, streaming.

      1. Split each document into sentences (`split_sentences`) and tokenize them with the "targets" vocabulary.
      2. Take the documents in groups of `documents_per_group` consecutive ones of the (shuffled) stream: the
         "other document" of a random next segment is drawn from the rest of the group, standing in for BERT's
         draw from the whole corpus.
      3. Chunks: from a document's first sentence, add sentences until they hold the target T = L - 3 tokens
         (L = sequence_length["targets"]) or the document ends; with probability short_seq_prob (BERT's 0.1) T is
         uniform in [2, L - 3] instead (drawn per chunk; BERT draws it per document).
      4. A = the chunk's first k sentences, k uniform in [1, sentences - 1]; a one-sentence chunk splits at a
         uniform token instead (BERT would force a random B there; this keeps both labels at exactly 50%).
      5. NSP: with probability 0.5 B = sentences of another document, from a uniform sentence until they hold
         T - len(A) tokens (label 1) and the unused sentences start the next chunk; otherwise B = the rest of the
         chunk (label 0). SOP: B = the rest of the chunk, and with probability 0.5 A and B swap places (label 1).
      6. Truncation (BERT's truncate_seq_pair): while len(A) + len(B) > L - 3, drop a token from the longer
         segment (B on a tie), from its front or back with equal chance.
      7. Layout [CLS] A [SEP] B [SEP] with token types 0 (CLS, A, first SEP) and 1 (B, last SEP).
    Randomness: stateless ops seeded per group by `seqio.map_over_dataset` and the group's tokens.
    """
    if task not in PAIR_TASKS:
        raise ValueError(f"sentence_pairs task={task!r}; known: {', '.join(PAIR_TASKS)}")
    length = sequence_length["targets"]
    if length < 5:
        raise ValueError(f"sentence pairs need targets_length >= 5 ([CLS] a [SEP] b [SEP]), got {length}")
    if not 0 <= short_seq_prob < 1:
        raise ValueError(f"short_seq_prob={short_seq_prob} must lie in [0, 1)")
    tokenize = _tokenize_sentences(output_features["targets"].vocabulary)
    documents = dataset.map(tokenize, num_parallel_calls=tf.data.AUTOTUNE)
    documents = documents.filter(lambda doc: tf.size(doc["tokens"]) > 0)
    groups = documents.ragged_batch(documents_per_group)
    pairs = _make_pairs(groups, task=task, length=length, short_seq_prob=short_seq_prob, ids=ids).unbatch()

    def dense(example):  # unbatched rows of a ragged batch keep a ragged spec; make them plain tensors again
        return {key: tf.identity(value) for key, value in example.items()}

    return pairs.map(dense, num_parallel_calls=tf.data.AUTOTUNE)
