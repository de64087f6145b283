"""Incidents of running streams, and the alerts that tell them.

The continuous job writes one `StreamReport` (stream_report.py) per query every few seconds
into Dagster's event log; the health sensor reads the latest report of each stream, finds its
problems (problems.py) and feeds them to `HealthState.evaluate`, a small state machine per
stream and problem:

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
from typing import Any

from stream_assets.monitoring.problems import HealthThresholds, Problem, StreamView, problems
from stream_assets.monitoring.stream_report import StreamReport

FIRING = "firing"
RESOLVED = "resolved"
_MAX_OUTBOX = 100


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
        """(rows, dead letters) over the newest reports holding `dead_letter_window_rows`.

        Every report since the last tick counts, not only the newest: a tick can come after
        several reports, and the dead letters of the others would go unseen."""
        seen = state.dead[-1][0] if state.dead else None
        for report_id, report in _reports_since(view, seen):
            if report.dead_letter_rows is not None and report.input_rows:
                state.dead.append([report_id, report.input_rows, report.dead_letter_rows])
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
        seen = state.late[-1][0] if state.late else None
        for report_id, report in _reports_since(view, seen):
            state.late.append([report_id, report.reported_at, report.late_rows])
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


def _reports_since(view: StreamView, seen: int | None) -> list[tuple[int, StreamReport]]:
    """The view's reports newer than storage id `seen`, oldest first (its run's recent
    reports, or the newest alone when those were not read)."""
    reports = view.recent
    if not reports and view.report is not None and view.report_id is not None:
        reports = ((view.report_id, view.report),)
    return [(rid, report) for rid, report in reports if seen is None or rid > seen]
