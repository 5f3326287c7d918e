"""Batches whose rows continue their own stretch of the token stream from one step to the next.

XLNet's memory (Transformer-XL's segment-level recurrence) lets row r of step t + 1 attend to row r of step t, which
only helps if that row holds the text that came just before. A shuffled, packed batch has no such order. The
released XLNet code split the token stream of each input file into batch-size contiguous sub-streams ("batchify")
and fed sub-stream r to row r. Here the (infinite, repeated) stream of converted examples, in stream order, is cut
into windows of rows x window examples; in each window row r reads examples r * window, ..., r * window + window - 1,
one per step:

    examples  e0 e1 e2 e3 e4 e5 | e6 ...      (rows = 2, window = 3)
    step 0:   row 0 = e0, row 1 = e3
    step 1:   row 0 = e1, row 1 = e4
    step 2:   row 0 = e2, row 1 = e5
    step 3:   row 0 = e6, row 1 = e9          (a new window: every row jumps to a new stretch)

So a row continues its text for `window` steps, then starts another stretch (for the memory, like crossing a
document boundary, which XLNet's stream does too). Windows over the stream, rather than one fixed sub-stream per row,
never leave a row without text, whatever the number of rows and documents (a validation split may have fewer
documents than a batch has rows), and need one input pipeline, not one per row. Costs: rows x window examples are
buffered (and saved in the iterator checkpoint), and examples keep the stream's order (the source may still
shuffle its documents).
"""

from __future__ import annotations

import tensorflow as tf


def contiguous_rows(dataset: tf.data.Dataset, rows: int, window: int) -> tf.data.Dataset:
    """{name: [length]} examples in stream order -> batches {name: [rows, length]} laid out as above."""

    def by_step(block):  # {name: [rows * window, length]} -> {name: [window, rows, length]}
        return {name: tf.transpose(tf.reshape(value, [rows, window, -1]), [1, 0, 2]) for name, value in block.items()}

    return dataset.batch(rows * window, drop_remainder=True).map(by_step).unbatch()
