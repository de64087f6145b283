"""Health of running streams: what the continuous job reports, and incidents derived from it.

The continuous job writes one `StreamReport` per query every few seconds into Dagster's event
log (as metadata of an asset event); the health sensor reads the latest report of each stream
and feeds it to `HealthState.evaluate`, a small state machine per stream and problem:

    ok --(problem seen)--> open: one "firing" alert
    open --(problem seen again)--> open: nothing
    open --(problem absent `clear_after` times, or the stream stopped)--> ok: one "resolved"

so an incident produces exactly one alert and one resolved notice however many ticks it lasts.
Everything here is pure (no Dagster instance, Spark or network); the state is plain JSON and
lives in the sensor's cursor.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict, dataclass, field
from enum import StrEnum
from itertools import pairwise
from typing import Any

from stream_assets.monitoring.stream_report import Status, StreamReport

FIRING = "firing"
RESOLVED = "resolved"
_MAX_OUTBOX = 100


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


@dataclass(frozen=True)
class Alert:
    """One notification: a problem starts (firing) or ends (resolved)."""

    stream: str
    problem: str
    state: str
    summary: str
    detail: str = ""
    at: float = 0.0
    since: float | None = None
    run_id: str | None = None

    @property
    def incident(self) -> str:
        return f"{self.stream}/{self.problem}/{int(self.since or self.at)}"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Alert:
        return cls(**{k: data[k] for k in cls.__dataclass_fields__ if k in data})


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


_TITLES = {
    Problem.FAILED: "query failed",
    Problem.STALLED: "stream stalled",
    Problem.BEHIND: "stream falling behind",
    Problem.DEAD_LETTERS: "dead-letter rate above threshold",
    Problem.EXPECTATIONS: "expectation failing",
    Problem.SOURCE_UNREACHABLE: "source unreachable",
    Problem.LATE_ROWS: "late rows dropped",
}


@dataclass
class StreamState:
    open: dict[str, dict[str, Any]] = field(default_factory=dict)
    lags: list[list[int]] = field(default_factory=list)  # [report_id, lag] samples
    backlog: list[list[int]] = field(default_factory=list)  # [report_id, versions] samples
    dead: list[list[int]] = field(default_factory=list)  # [report_id, rows, dead] samples
    late: list[list[float]] = field(default_factory=list)  # [report_id, at, late rows] samples


@dataclass
class HealthState:
    """Open incidents per stream, recent lag and backlog samples, and alerts not delivered
    yet."""

    streams: dict[str, StreamState] = field(default_factory=dict)
    outbox: list[Alert] = field(default_factory=list)

    # -- persistence (the sensor cursor) -------------------------------------------------
    def to_json(self) -> str:
        return json.dumps(
            {
                "v": 1,
                "streams": {n: asdict(s) for n, s in self.streams.items()
                            if s.open or s.lags or s.backlog or s.dead or s.late},
                "outbox": [a.to_dict() for a in self.outbox],
            },
            separators=(",", ":"),
            sort_keys=True,
        )

    @classmethod
    def from_json(cls, text: str | None) -> HealthState:
        if not text:
            return cls()
        try:
            data = json.loads(text)
            return cls(
                streams={n: StreamState(**s) for n, s in data.get("streams", {}).items()},
                outbox=[Alert.from_dict(a) for a in data.get("outbox", [])],
            )
        except (ValueError, TypeError, KeyError):
            return cls()  # an unreadable cursor starts over rather than blocking alerts

    def open_incidents(self, stream: str) -> dict[str, dict[str, Any]]:
        state = self.streams.get(stream)
        return dict(state.open) if state else {}

    # -- the state machine --------------------------------------------------------------
    def evaluate(
        self, views: Iterable[StreamView], now: float, thresholds: HealthThresholds
    ) -> list[Alert]:
        """Update incidents from this evaluation's views; returns (and queues) new alerts."""
        new: list[Alert] = []
        for view in views:
            state = self.streams.setdefault(view.stream, StreamState())
            if not view.running:
                reason = view.ended_because or "the stream is no longer running"
                for problem, incident in sorted(state.open.items()):
                    new.append(self._alert(view, problem, RESOLVED, incident, now, reason))
                state.open.clear()
                state.lags.clear()
                state.backlog.clear()
                state.dead.clear()
                state.late.clear()
                continue
            report = view.report
            lags = self._sample(state.lags, view,
                                None if report is None else report.kafka_lag, thresholds)
            backlog = self._sample(state.backlog, view, None if report is None
                                   else report.upstream_versions_waiting, thresholds)
            window = self._sample_dead_letters(state, view, thresholds)
            late = self._sample_late_rows(state, view, now, thresholds)
            found = problems(view, lags, now, thresholds, window, backlog_history=backlog,
                             late_window=late)
            for problem, detail in found.items():
                incident = state.open.get(problem)
                if detail is not None:
                    if incident is None:
                        incident = {"since": now, "detail": detail, "clear": 0}
                        state.open[problem] = incident
                        new.append(self._alert(view, problem, FIRING, incident, now, detail))
                    else:
                        incident.update(detail=detail, clear=0)
                elif incident is not None:
                    incident["clear"] = incident.get("clear", 0) + 1
                    if incident["clear"] >= thresholds.clear_after:
                        del state.open[problem]
                        new.append(self._alert(view, problem, RESOLVED, incident, now,
                                               "back to normal"))
        self.outbox.extend(new)
        del self.outbox[:-_MAX_OUTBOX]
        return new

    @staticmethod
    def _sample(samples: list[list[int]], view: StreamView, value: int | None,
                t: HealthThresholds) -> list[int]:
        """Adds a new report's measurement (the same report seen again is not a new sample);
        returns the last `behind_batches + 1` values, oldest first.

        Only a report that covers a batch is a sample: reports come every `event_interval_s`,
        and when a batch takes longer, several in a row measure the same processed position.
        Those repeats made a backlog being worked off look flat, not shrinking, so busy
        catch-up batches looked like falling behind (a query that completes no batch at all
        is a stall, judged apart)."""
        batched = view.report is not None and view.report.batches > 0
        if value is not None and view.report_id is not None and batched:
            if not samples or samples[-1][0] != view.report_id:
                samples.append([view.report_id, int(value)])
            del samples[: -(t.behind_batches + 1)]
        return [sample for _, sample in samples]

    @staticmethod
    def _sample_dead_letters(state: StreamState, view: StreamView, t: HealthThresholds
                             ) -> tuple[int, int] | None:
        """(rows, dead letters) over the newest reports holding `dead_letter_window_rows`."""
        report = view.report
        if (report is not None and report.dead_letter_rows is not None and report.input_rows
                and view.report_id is not None
                and (not state.dead or state.dead[-1][0] != view.report_id)):
            state.dead.append([view.report_id, report.input_rows, report.dead_letter_rows])
        rows = dead = 0
        keep = 0
        for _, sample_rows, sample_dead in reversed(state.dead):
            keep += 1
            rows += sample_rows
            dead += sample_dead
            if rows >= t.dead_letter_window_rows:
                break
        del state.dead[: len(state.dead) - keep]
        return (rows, dead) if state.dead else None

    @staticmethod
    def _sample_late_rows(state: StreamState, view: StreamView, now: float,
                          t: HealthThresholds) -> int | None:
        """Late rows over the reports of the last `late_rows_window_s`; None when the stream
        declares no threshold."""
        if view.late_rows_alert is None:
            return None
        report = view.report
        if (report is not None and view.report_id is not None
                and (not state.late or state.late[-1][0] != view.report_id)):
            state.late.append([view.report_id, report.reported_at, report.late_rows])
        state.late[:] = [s for s in state.late if s[1] >= now - t.late_rows_window_s]
        return int(sum(s[2] for s in state.late))

    @staticmethod
    def _alert(view: StreamView, problem: str, state: str, incident: Mapping[str, Any],
               now: float, detail: str) -> Alert:
        title = _TITLES.get(Problem(problem), problem)
        summary = f"{view.stream}: {title}" + (" - resolved" if state == RESOLVED else "")
        return Alert(
            stream=view.stream,
            problem=str(problem),
            state=state,
            summary=summary,
            detail=detail,
            at=now,
            since=incident.get("since"),
            run_id=view.run_id,
        )

    # -- delivery -------------------------------------------------------------------------
    def deliver(self, send: Callable[[Alert], None]) -> tuple[list[Alert], list[str]]:
        """Send queued alerts in order; stop at the first failure and keep the rest queued.

        Returns what was sent and the errors (already secret-free, from the sink).
        """
        sent: list[Alert] = []
        errors: list[str] = []
        while self.outbox:
            alert = self.outbox[0]
            try:
                send(alert)
            except Exception as exc:
                errors.append(str(exc))
                break
            sent.append(self.outbox.pop(0))
        return sent, errors

