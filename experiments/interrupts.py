"""Ctrl-C that is not lost.

Python turns SIGINT into a KeyboardInterrupt wherever the main thread happens to be; when that is
inside code that ignores exceptions (a finaliser, a callback from C, a library's broad ``except``),
the interrupt disappears and a study the user stopped runs on to its end. Inside
:func:`remembered_interrupts` every SIGINT is also remembered, and :func:`raise_if_interrupted`,
called at each training step and when the command ends, raises it again.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager

__all__ = ["raise_if_interrupted", "remembered_interrupts"]

_requested = threading.Event()


def _on_sigint(signum, frame) -> None:
    _requested.set()
    raise KeyboardInterrupt


def raise_if_interrupted() -> None:
    """Raise KeyboardInterrupt if SIGINT arrived inside :func:`remembered_interrupts`."""
    if _requested.is_set():
        raise KeyboardInterrupt


@contextmanager
def remembered_interrupts() -> Iterator[None]:
    """SIGINT raises KeyboardInterrupt and is remembered until the block ends; a block whose
    interrupt was swallowed on the way ends with KeyboardInterrupt. Outside the main thread (where
    signal handlers cannot be set) it changes nothing."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    _requested.clear()
    previous = signal.signal(signal.SIGINT, _on_sigint)
    try:
        yield
        raise_if_interrupted()
    finally:
        signal.signal(signal.SIGINT, previous)
        _requested.clear()
