"""The input pipeline: vocabularies, text sources, preprocessors, seqio tasks and sharded global batches.

TensorFlow runs only this pipeline, and must never take accelerator memory from JAX. Hiding the accelerators from
TF works only before TF's runtime starts, so it happens here, once, when the package is first imported: before any
of its modules can run a TF op, whichever entry point (lmx.train, lmx.bench, python -m lmx.data.vocab) or test
comes first.
"""

from lmx.data import sources as _sources

_sources.hide_accelerators_from_tf()
