"""Crash at the moment a file of a commit protocol appears: a SIGKILL, or a crash *image*.

A crash image: the writer is stopped (SIGSTOP) the moment the file appears, the lake is
copied, the writer continues (SIGCONT). The copy is what a SIGKILL there would have left (a
kill discards nothing that a stopped process has already written), so one run yields an
image at every point, and each image is restarted on its own. The writer is a process group
of its own (`crash_run`: a fault_driver or CLI process and its JVM), or this test process's
own JVM (`images_of_own_jvm`: every Delta write of an in-process call is the JVM's).
test_crash_sweep.py and test_redrive.py use both; docs/guarantees.md lists the points.
"""

from __future__ import annotations

import contextlib
import fnmatch
import os
import shutil
import signal
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from stream_assets_tests.fault_driver import Driver, NewFiles, protocol_file

# (how, point, lake): 'image' or 'kill', the kill point's name, the lake as the crash left it.
Crash = tuple[str, str, Path]


def _group(pgid: int) -> list[int]:
    pids = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            fields = stat[stat.rfind(")") + 2:].split()
            if int(fields[2]) == pgid:
                pids.append(int(entry))
    return pids


def _freeze(stop: Callable[[], None], pids: Callable[[], list[int]]) -> None:
    """`stop()` (a SIGSTOP) and wait until every thread of `pids()` has stopped.

    The signal is sent again while waiting: a process forked while the first one was being
    delivered (a Python worker of Spark's) would not have received it.
    """
    deadline = time.monotonic() + 10
    running: list[str] = []
    while time.monotonic() < deadline:
        stop()
        threads = []
        for pid in pids():
            with contextlib.suppress(OSError):
                threads += [f"{pid}/task/{tid}" for tid in os.listdir(f"/proc/{pid}/task")]
        running = [t for t in threads if not _stopped_task(t)]
        if not running:
            return
        time.sleep(0.001)
    states = {t: Path(f"/proc/{t}/stat").read_text()[:80] for t in running[:5]}
    raise AssertionError(f"the writer did not stop: {states}")


def freeze_group(pgid: int) -> None:
    _freeze(lambda: os.killpg(pgid, signal.SIGSTOP), lambda: _group(pgid))


def _stopped_task(task: str) -> bool:
    try:
        stat = Path(f"/proc/{task}/stat").read_text()
    except OSError:
        return True
    # D: inside an uninterruptible system call (a vfork waiting for its stopped child, disk
    # I/O). It stops on its way back to user space; a system call it completes meanwhile is
    # one a SIGKILL would have let complete too.
    return stat[stat.rfind(")") + 2] in "TtZXD"


def copy_lake(root: Path, dest: Path) -> None:
    for part in ("tables", "checkpoints"):
        if (root / part).exists():
            shutil.copytree(root / part, dest / part, symlinks=True)


def crash_run(driver: Driver, root: Path, images: Path,
              plan: Callable[[str], str | None], timeout_s: float = 400
              ) -> tuple[list[Crash], bool]:
    """Run the driver; at each new kill point, `plan(point)` says what to do.

    'image': freeze the group, copy the lake to a new folder below `images`, continue.
    'kill': SIGKILL the group (the lake at `root` is then the crash), and stop watching.
    None: let it pass. Returns ((how, point, lake) for each crash, whether it was killed).
    """
    crashes: list[Crash] = []
    seen: set[str] = set()
    with NewFiles(root) as watch:
        driver.start()
        pgid = driver.proc.pid
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            running = driver.alive()
            for path in watch.poll(0.2 if running else 0):
                point = protocol_file(root, path)
                if point is None or point in seen:
                    continue
                seen.add(point)
                how = plan(point)
                if how == "kill":
                    driver.kill()
                    crashes.append(("kill", point, root))
                    return crashes, True
                if how == "image" and running:
                    freeze_group(pgid)
                    try:
                        dest = images / f"{len(crashes):02d}"
                        copy_lake(root, dest)
                    finally:
                        os.killpg(pgid, signal.SIGCONT)
                    crashes.append(("image", point, dest))
            if not running:
                outcome = driver.finish()
                assert outcome.ok, outcome.describe()
                return crashes, False
        driver.kill()
        raise AssertionError(f"timed out after {timeout_s:g} s; points seen: {sorted(seen)}")


@contextlib.contextmanager
def images_of_own_jvm(jvm_pid: int, root: Path, images: Path,
                      plan: Callable[[str], str | None]) -> Iterator[list[Crash]]:
    """Crash images of what this process's JVM writes below `root` while the block runs.

    For in-process calls (a re-drive through the test's SparkSession): a thread watches the
    lake and, at each point `plan` says 'image' for, stops the JVM (every Delta write is its
    own; the Python side only waits for it), copies the lake and lets it continue. The list
    yielded fills as the block runs."""
    crashes: list[Crash] = []
    seen: set[str] = set()
    done = threading.Event()
    failed: list[BaseException] = []

    def image(point: str) -> None:
        _freeze(lambda: os.kill(jvm_pid, signal.SIGSTOP), lambda: [jvm_pid])
        try:
            dest = images / f"{len(crashes):02d}"
            copy_lake(root, dest)
        finally:
            os.kill(jvm_pid, signal.SIGCONT)
        crashes.append(("image", point, dest))

    def watch_lake(watch: NewFiles) -> None:
        try:
            while not done.is_set():
                for path in watch.poll(0.05):
                    point = protocol_file(root, path)
                    if point is not None and point not in seen:
                        seen.add(point)
                        if plan(point) == "image":
                            image(point)
        except BaseException as exc:  # shown by the test, after the JVM is running again
            failed.append(exc)

    with NewFiles(root) as watch:
        watcher = threading.Thread(target=watch_lake, args=(watch,), daemon=True)
        watcher.start()
        try:
            yield crashes
        finally:
            done.set()
            watcher.join(30)
    if failed:
        raise failed[0]


def plan(kill: str | None = None, images: tuple[str, ...] = ()) -> Callable[[str], str | None]:
    """Kill at the first point matching `kill`; an image at the first point of each of
    `images` (glob patterns over kill point names): a deterministic sample."""
    pending = list(images)

    def decide(point: str) -> str | None:
        if kill is not None and fnmatch.fnmatchcase(point, kill):
            return "kill"
        for pattern in pending:
            if fnmatch.fnmatchcase(point, pattern):
                pending.remove(pattern)
                return "image"
        return None

    return decide


def hadoop_checksum(point: str) -> bool:
    """Hadoop's `.<file>.crc`, which its local file system creates and renames in the same
    call as the file itself: a crash between the two differs only in whether Hadoop could
    verify the file, and a missing checksum is not verified. Images at these points were
    restarted in every run until 2026-11-30 and never differed; skipping them keeps the suite
    within its time. Delta's own version checksums (`00…0.crc`) stay points."""
    name = point.rsplit("/", 1)[-1]
    return name.startswith(".") and name.endswith(".crc")
