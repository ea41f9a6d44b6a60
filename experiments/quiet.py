"""Silence library messages that tell a user of the command line nothing.

Inside :func:`quiet_libraries`: transformers' deprecation warnings about the
``gradient_checkpointing`` names (raised by TRL's own calls, once per generation) are ignored, and
the Hugging Face progress bars of loading and saving weights are off (the command line draws its
own). Every other warning still shows.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from contextlib import contextmanager

__all__ = ["quiet_libraries"]

_DEPRECATED_NAMES = r"`\w*gradient_checkpointing\w*` is deprecated"


@contextmanager
def quiet_libraries() -> Iterator[None]:
    """Ignore the messages above for the duration of the block; restore everything after."""
    from transformers.utils import logging as hf_logging

    bars_were_on = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=_DEPRECATED_NAMES, category=FutureWarning)
        try:
            yield
        finally:
            if bars_were_on:
                hf_logging.enable_progress_bar()
