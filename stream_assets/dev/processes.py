"""Long-lived child processes: start them so they still stop when asked to, find out whether
they live, stop them, read the end of their logs."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
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


def cmdline(pid: int) -> str:
    """The process's command line, or "" when it is gone."""
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
        return raw.replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        pass
    if Path("/proc").is_dir():
        return ""
    # No /proc (macOS): ask ps.
    result = subprocess.run(
        ["ps", "-o", "command=", "-p", str(pid)], capture_output=True, text=True
    )
    return result.stdout


def alive(pid: int) -> bool:
    """Whether the process exists and is not a zombie (dead, not yet reaped by its parent,
    which still passes kill(pid, 0))."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        return stat.rpartition(")")[2].split()[0] != "Z"
    except (OSError, IndexError):
        return True


def send_signal(pid: int, sig: signal.Signals) -> None:
    """Signal the process; one already gone is no error."""
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, sig)


def wait_dead(pid: int, timeout_s: float, is_alive: Callable[[int], bool] = alive) -> bool:
    """Whether the process ended within `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if not is_alive(pid):
            return True
        time.sleep(0.1)
    return not is_alive(pid)


def log_tail(path: Path, lines: int = 40) -> str:
    """The last `lines` lines of a log (read from its last 64 kB), or "" without one."""
    try:
        with open(path, "rb") as handle:
            handle.seek(0, os.SEEK_END)
            size = handle.tell()
            handle.seek(max(0, size - 64 * 1024))
            data = handle.read().decode(errors="replace")
    except OSError:
        return ""
    return "\n".join(data.splitlines()[-lines:])
