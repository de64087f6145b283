"""Start long-lived child processes that still stop when asked to."""

from __future__ import annotations

import signal
import subprocess
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

# Signals a child must be able to receive: `stop` sends SIGTERM, a terminal sends SIGINT.
_STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


@contextmanager
def _stop_signals_not_ignored() -> Iterator[None]:
    """Let children started inside receive SIGTERM and SIGINT, even if this process ignores them.

    An ignored signal stays ignored across exec, and a JVM that starts with SIGTERM ignored
    never installs its handler: `kafka stop` then waits in vain for a clean shutdown. This
    process ignores SIGTERM whenever it started in the background of a non-interactive shell
    (SIGINT ignored) and Dagster then mapped SIGTERM onto SIGINT's disposition. A handler set
    here is reset to the default by exec in the child, which is all the child needs.
    """
    if threading.current_thread() is not threading.main_thread():
        yield  # only the main thread may change dispositions
        return
    saved = {sig: signal.getsignal(sig) for sig in _STOP_SIGNALS}
    try:
        for sig, handler in saved.items():
            if handler == signal.SIG_IGN:
                signal.signal(sig, _ignore)
        yield
    finally:
        for sig, handler in saved.items():
            if handler == signal.SIG_IGN:
                signal.signal(sig, handler)


def _ignore(signum: int, frame: Any) -> None:
    """Ignores the signal in this process, like SIG_IGN, but is reset by exec in a child."""


def popen(command: list[str], **kwargs: Any) -> subprocess.Popen[bytes]:
    """subprocess.Popen, with SIGTERM and SIGINT deliverable to the child."""
    with _stop_signals_not_ignored():
        return subprocess.Popen(command, **kwargs)
