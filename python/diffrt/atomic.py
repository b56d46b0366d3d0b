"""Atomic file output: a file is written under a temporary name and renamed over its final name
only when the writer finishes, so readers never see half a file (converter output, the model store)."""

import contextlib
import os


@contextlib.contextmanager
def replace_on_success(tmp, target):
    """Yield ``tmp``; on success rename it over ``target``. On any error (KeyboardInterrupt included)
    ``tmp`` is removed and an existing ``target`` is left as it was."""
    try:
        yield tmp
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.remove(tmp)
        raise
