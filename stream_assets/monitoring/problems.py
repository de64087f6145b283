"""What is wrong with a running stream now: `problems` reads its latest report (and a few
samples the health state keeps) against the thresholds. Pure: the health sensor's state machine
(monitoring/health.py) turns what it finds into incidents and alerts."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from itertools import pairwise

from stream_assets.monitoring.stream_report import Status, StreamReport


class Problem(StrEnum):
    FAILED = "failed"
    STALLED = "stalled"
    BEHIND = "behind"
    DEAD_LETTERS = "dead_letters"
    EXPECTATIONS = "expectations"
    RUN_FAILED = "run_failed"
    SOURCE_UNREACHABLE = "source_unreachable"
    LATE_ROWS = "late_rows"

    @property
    def severe(self) -> bool:
        """Data stopped flowing: a red alert and an ERROR check; the others warn (orange)."""
        return self in (Problem.FAILED, Problem.RUN_FAILED, Problem.SOURCE_UNREACHABLE)


@dataclass(frozen=True)
class HealthThresholds:
    """When a stream counts as unhealthy. Times in seconds."""

    stall_after_s: float = 300.0
    silent_after_s: float = 600.0
    behind_batches: int = 3
    dead_letter_ratio: float = 0.05
    dead_letter_window_rows: int = 1000
    dead_letter_min_rows: int = 200
    # A table's `late_rows_alert` is judged over the reports of this many seconds.
    late_rows_window_s: float = 600.0
    clear_after: int = 1

    def __post_init__(self) -> None:
        if self.behind_batches < 1 or self.clear_after < 1:
            raise ValueError("behind_batches and clear_after must be at least 1")
        if not 0 <= self.dead_letter_ratio <= 1:
            raise ValueError("dead_letter_ratio is a fraction between 0 and 1")


@dataclass(frozen=True)
class StreamView:
    """What the sensor knows about one stream at one evaluation."""

    stream: str
    running: bool
    report: StreamReport | None = None
    report_id: int | None = None  # event storage id, to tell a new report from a seen one
    run_id: str | None = None
    run_started_at: float | None = None
    ended_because: str | None = None  # why a stream that was running no longer is
    upstream: tuple[str, ...] = ()  # the Delta tables the stream reads, for alert texts
    late_rows_alert: int | None = None  # the table's declared threshold (None: not judged)
    # The run's reports up to `report` (storage id, report), oldest first: the late rows of each
    # count, also those of a report a newer one replaced before the sensor's tick.
    recent: tuple[tuple[int, StreamReport], ...] = ()


def _fmt_s(seconds: float) -> str:
    return f"{seconds / 60:.1f} min" if seconds >= 120 else f"{seconds:.0f} s"


def _upstream_name(view: StreamView) -> str:
    return f"upstream {' + '.join(view.upstream)}" if view.upstream else "upstream Delta"


def _waiting_input(view: StreamView, report: StreamReport) -> str | None:
    """What input waits for the stream, in words ("3 upstream raw_events versions wait"),
    None when nothing measured waits. Kafka records or upstream Delta versions: either is
    input the query has not processed."""
    parts = []
    if report.kafka_lag:
        parts.append(f"{report.kafka_lag} record{'s' if report.kafka_lag != 1 else ''}")
    versions = report.upstream_versions_waiting
    if versions:
        parts.append(f"{versions} {_upstream_name(view)} version{'s' if versions != 1 else ''}")
    if not parts:
        return None
    one = len(parts) == 1 and parts[0].startswith("1 ")
    return " and ".join(parts) + (" waits" if one else " wait")


def _growing(history: list[int], t: HealthThresholds) -> bool:
    return len(history) > t.behind_batches and all(a < b for a, b in pairwise(history))


def _shrinking(history: list[int]) -> bool:
    return len(history) >= 2 and history[-1] < history[0]


def problems(
    view: StreamView,
    lag_history: list[int],
    now: float,
    t: HealthThresholds,
    dead_window: tuple[int, int] | None = None,
    backlog_history: list[int] | None = None,
    late_window: int | None = None,
) -> dict[Problem, str | None]:
    """Each problem that can be judged now: its description if present, None if absent.

    `lag_history` holds the Kafka lag and `backlog_history` the upstream Delta versions
    waiting of the latest reports, oldest first. A problem missing from the result cannot
    be judged (no data) and keeps its state.
    """
    report = view.report
    found: dict[Problem, str | None] = {}
    if report is None:
        if view.run_started_at is not None and now - view.run_started_at > t.silent_after_s:
            found[Problem.STALLED] = (
                f"no report from the continuous run for {_fmt_s(now - view.run_started_at)} "
                "since it started"
            )
        return found

    failing = report.status == Status.FAILED
    found[Problem.FAILED] = None
    if failing:
        restarts = (
            f" ({report.consecutive_failures} failed attempts so far)"
            if report.consecutive_failures > 1 else ""
        )
        found[Problem.FAILED] = (report.error or "the query stopped with an error") + restarts

    found[Problem.SOURCE_UNREACHABLE] = None
    if report.source_unreachable:
        since = report.source_unreachable_since or report.reported_at
        found[Problem.SOURCE_UNREACHABLE] = (
            f"{report.source_unreachable} (for {_fmt_s(max(0.0, now - since))})"
        )

    age = now - report.reported_at
    found[Problem.STALLED] = None
    if age > t.silent_after_s:
        found[Problem.STALLED] = (
            f"no report from the continuous run for {_fmt_s(age)}: the job may be hung"
        )
    elif not failing and report.status in (Status.RUNNING, Status.IDLE, Status.STARTING):
        since = report.last_batch_at or report.started_at
        if since is not None and report.caught_up_at is not None:
            since = max(since, report.caught_up_at)
        waiting = _waiting_input(view, report)
        if since is not None and waiting and now - since > t.stall_after_s:
            found[Problem.STALLED] = (
                f"no batch completed for {_fmt_s(now - since)} while {waiting}"
            )

    behind = None
    # Busy batches while the measured backlog shrinks are a catch-up, not falling behind:
    # when batches run back to back, Spark's input and processing rates are the same
    # measure and noise alone would open and close the incident over and over.
    catching_up = _shrinking(lag_history) or _shrinking(backlog_history or [])
    if report.behind_batches >= t.behind_batches and not catching_up:
        behind = (
            f"input rate above processing rate for {report.behind_batches} consecutive batches "
            f"({report.input_rows_per_second:.0f} rows/s in, "
            f"{report.processed_rows_per_second:.0f} rows/s processed)"
        )
    elif _growing(lag_history, t):
        behind = (
            f"Kafka lag grew over {len(lag_history) - 1} consecutive reports: "
            f"{lag_history[0]} -> {lag_history[-1]} records"
        )
    elif backlog_history and _growing(backlog_history, t):
        behind = (
            f"{_upstream_name(view)} backlog grew over {len(backlog_history) - 1} consecutive "
            f"reports: {backlog_history[0]} -> {backlog_history[-1]} versions waiting"
        )
    found[Problem.BEHIND] = behind

    if dead_window is None and report.dead_letter_rows is not None:
        dead_window = (report.input_rows, report.dead_letter_rows)
    if dead_window is not None and dead_window[0] >= t.dead_letter_min_rows:
        rows, dead = dead_window
        ratio = dead / rows
        found[Problem.DEAD_LETTERS] = (
            f"{ratio:.1%} of the last {rows} records were dead-lettered "
            f"(threshold {t.dead_letter_ratio:.1%})"
            if ratio > t.dead_letter_ratio else None
        )
    if report.failing_expectations is not None:
        found[Problem.EXPECTATIONS] = report.failing_expectations or None
    if view.late_rows_alert is not None:
        late = report.late_rows if late_window is None else late_window
        found[Problem.LATE_ROWS] = (
            f"the watermark dropped {late:,} late rows in the last "
            f"{_fmt_s(t.late_rows_window_s)} (alert above {view.late_rows_alert:,})"
            if late > view.late_rows_alert else None
        )
    return found
