"""Ctrl-C is not lost when code on the way swallows the KeyboardInterrupt."""

from __future__ import annotations

import os
import signal

import pytest

from tokenshape.experiments import cli
from tokenshape.experiments.inner_run import _Steps
from tokenshape.experiments.interrupts import raise_if_interrupted, remembered_interrupts


def _swallowed_sigint():
    """SIGINT delivered while code that ignores every exception runs."""
    try:
        os.kill(os.getpid(), signal.SIGINT)
        for _ in range(1000):  # let the handler run between bytecodes
            pass
    except KeyboardInterrupt:
        pass


def test_a_swallowed_interrupt_is_raised_at_the_next_step_and_at_the_end():
    handler = signal.getsignal(signal.SIGINT)
    with pytest.raises(KeyboardInterrupt), remembered_interrupts():
        _swallowed_sigint()
        with pytest.raises(KeyboardInterrupt):
            _Steps(None).on_step_end(None, None, None)
        # Reaching the end of the block raises it too.
    assert signal.getsignal(signal.SIGINT) is handler
    raise_if_interrupted()  # forgotten once the block has ended


def test_without_an_interrupt_nothing_is_raised():
    with remembered_interrupts():
        _Steps(None).on_step_end(None, None, None)


def test_a_command_whose_interrupt_was_swallowed_exits_130(monkeypatch, capsys):
    monkeypatch.setattr(cli, "_run_report", lambda args, console: _swallowed_sigint() or 0)
    assert cli.main(["report", "anywhere"]) == 130
    assert "interrupted" in capsys.readouterr().out
