"""Quiet start-up: TensorFlow's, seqio's, absl's and orbax's chatter hidden from the CLIs unless --verbose.

Two kinds of chatter:
  - native: TensorFlow's C++ runtime writes start-up lines (CUDA probing, "All log messages before
    absl::InitializeLog() ...") straight to file descriptor 2 while it is imported, before any log level applies.
    `hold_native_stderr()` points fd 2 at a temporary file while the CLI's imports run, `release_native_stderr()`
    points it back; if an import fails, the held text is shown with the traceback.
  - Python: absl logging (seqio's, TFDS's and orbax's INFO and WARNING lines) and Python warnings.
    `configure_logging(verbose)` keeps only errors unless verbose.
Our own messages (progress, warnings such as a stale lock taken over, errors) are printed, not logged.
"""

from __future__ import annotations

import os
import sys
import tempfile
import warnings

_held: tuple[int, object, object] | None = None  # (the real fd 2 duplicated, the temporary file, excepthook)


def hold_native_stderr() -> None:
    """Sends file descriptor 2 to a temporary file until release_native_stderr()."""
    global _held
    if _held is not None:
        return
    sys.stderr.flush()
    saved = os.dup(2)
    held = tempfile.TemporaryFile()
    os.dup2(held.fileno(), 2)
    previous_hook = sys.excepthook

    def show_held_then_traceback(*exc_info):  # an import failed: what was held may say why
        release_native_stderr(replay=True)
        previous_hook(*exc_info)

    sys.excepthook = show_held_then_traceback
    _held = (saved, held, previous_hook)


def release_native_stderr(*, replay: bool = False) -> None:
    """Points file descriptor 2 back at the real stderr; `replay` writes what was held there first."""
    global _held
    if _held is None:
        return
    saved, held, previous_hook = _held
    _held = None
    sys.stderr.flush()
    os.dup2(saved, 2)
    os.close(saved)
    if replay:
        held.seek(0)
        os.write(2, held.read())
    held.close()
    sys.excepthook = previous_hook


def configure_logging(*, verbose: bool) -> None:
    """absl logging (which Python's root logger follows) at INFO when verbose, else ERROR; Python warnings shown
    only when verbose."""
    from absl import logging

    if verbose:
        logging.set_verbosity(logging.INFO)
    else:
        logging.set_verbosity(logging.ERROR)
        warnings.simplefilter("ignore")
