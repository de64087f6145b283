"""Incident detection: one alert when a problem starts, one notice when it ends."""

from __future__ import annotations

import pytest

from stream_assets.monitoring.health import FIRING, RESOLVED, HealthState
from stream_assets.monitoring.problems import HealthThresholds, Problem, StreamView
from stream_assets.monitoring.stream_report import Status, StreamReport

T = HealthThresholds(stall_after_s=60, silent_after_s=300, behind_batches=3,
                     dead_letter_ratio=0.1, dead_letter_min_rows=10)


def report(at: float, **fields) -> StreamReport:
    base = {"query": "raw_events", "status": Status.RUNNING, "reported_at": at,
            "last_batch_at": at, "started_at": 0.0, "kafka_lag": 0, "batches": 1}
    base.update(fields)
    return StreamReport(**base)


def view(rep: StreamReport | None, report_id: int = 1, running: bool = True, **kw) -> StreamView:
    return StreamView("raw_events", running=running, report=rep, report_id=report_id,
                      run_id="run-1", **kw)


def run(state: HealthState, *views_at: tuple[StreamView, float]) -> list[tuple[str, str]]:
    alerts = []
    for v, now in views_at:
        alerts += [(a.problem, a.state) for a in state.evaluate([v], now, T)]
    return alerts


def test_a_failed_query_alerts_once_however_many_ticks_it_stays_failed():
    state = HealthState()
    failed = report(100, status=Status.FAILED, error="boom: disk full", consecutive_failures=1)
    alerts = run(state, *[(view(failed, report_id=i), 100 + i) for i in range(5)])
    assert alerts == [(Problem.FAILED, FIRING)]
    assert state.outbox[0].detail.startswith("boom: disk full")


def test_failed_then_healthy_resolves_once():
    state = HealthState()
    failed = report(100, status=Status.FAILED, error="boom", consecutive_failures=3)
    healthy = report(130)
    alerts = run(state, (view(failed), 101), (view(healthy, 2), 131), (view(healthy, 2), 140))
    assert alerts == [(Problem.FAILED, FIRING), (Problem.FAILED, RESOLVED)]
    assert "3 failed attempts" in state.outbox[0].detail


def test_restarts_that_keep_failing_are_still_one_incident():
    state = HealthState()
    views = [(view(report(100 + i, status=Status.FAILED, error="boom",
                          consecutive_failures=i + 1), i), 101 + i) for i in range(4)]
    assert run(state, *views) == [(Problem.FAILED, FIRING)]


def test_stall_needs_both_no_progress_and_waiting_input():
    state = HealthState()
    idle_no_input = report(200, last_batch_at=100, kafka_lag=0)
    assert run(state, (view(idle_no_input), 205)) == []
    stuck = report(200, last_batch_at=100, kafka_lag=42)
    assert run(state, (view(stuck, 2), 205)) == [(Problem.STALLED, FIRING)]
    assert "42 records wait" in state.outbox[-1].detail
    moving = report(260, last_batch_at=259, kafka_lag=42)
    assert run(state, (view(moving, 3), 261)) == [(Problem.STALLED, RESOLVED)]


def test_input_arriving_after_a_long_idle_time_is_a_stall_only_once_it_waited_long_enough():
    state = HealthState()
    # last batch long ago, but the query was caught up at 190: records waiting since then
    fresh = report(200, last_batch_at=10, caught_up_at=190, kafka_lag=42)
    assert run(state, (view(fresh), 200)) == []
    assert run(state, (view(fresh), 249)) == []
    assert run(state, (view(fresh), 251)) == [(Problem.STALLED, FIRING)]
    assert state.outbox[-1].detail == "no batch completed for 61 s while 42 records wait"


def delta_view(rep: StreamReport, report_id: int = 1) -> StreamView:
    return StreamView("event_counts", running=True, report=rep, report_id=report_id,
                      run_id="run-1", upstream=("raw_events",))


def test_upstream_delta_versions_waiting_count_as_waiting_input_for_a_stall():
    state = HealthState()
    # a Delta-sourced query measures no Kafka lag at all
    idle = report(200, query="event_counts", last_batch_at=100, kafka_lag=None,
                  upstream_versions_waiting=0)
    assert run(state, (delta_view(idle), 205)) == []
    stuck = report(200, query="event_counts", last_batch_at=100, kafka_lag=None,
                   upstream_versions_waiting=3)
    assert run(state, (delta_view(stuck, 2), 205)) == [(Problem.STALLED, FIRING)]
    assert state.outbox[-1].detail == (
        "no batch completed for 105 s while 3 upstream raw_events versions wait")
    moving = report(260, query="event_counts", last_batch_at=259, kafka_lag=None,
                    upstream_versions_waiting=1)
    assert run(state, (delta_view(moving, 3), 261)) == [(Problem.STALLED, RESOLVED)]


def test_stall_text_names_every_kind_of_input_that_waits():
    one = report(200, last_batch_at=100, kafka_lag=None, upstream_versions_waiting=1)
    state = HealthState()
    run(state, (delta_view(one), 205))
    assert state.outbox[-1].detail.endswith("while 1 upstream raw_events version waits")
    both = report(200, last_batch_at=100, kafka_lag=42, upstream_versions_waiting=2)
    state = HealthState()
    run(state, (view(both), 205))  # no upstream names known: says what kind of table it is
    assert state.outbox[-1].detail.endswith(
        "while 42 records and 2 upstream Delta versions wait")


def test_a_run_that_stops_reporting_counts_as_stalled():
    state = HealthState()
    assert run(state, (view(report(100)), 500)) == [(Problem.STALLED, FIRING)]
    assert "no report" in state.outbox[-1].detail
    silent_from_start = StreamView("raw_events", running=True, run_id="r", run_started_at=0)
    assert run(HealthState(), (silent_from_start, 400)) == [(Problem.STALLED, FIRING)]


def test_input_faster_than_processing_for_k_batches_is_falling_behind():
    state = HealthState()
    assert run(state, (view(report(10, behind_batches=2)), 11)) == []
    assert run(state, (view(report(20, behind_batches=3), 2), 21)) == [(Problem.BEHIND, FIRING)]
    assert run(state, (view(report(30, behind_batches=0), 3), 31)) == [(Problem.BEHIND, RESOLVED)]


def test_busy_batches_while_the_lag_shrinks_are_a_catch_up_not_falling_behind():
    # A capped query working off a backlog runs batches back to back; its input rate then
    # equals its processing rate and noise tips the comparison either way.
    state = HealthState()
    lags = [400, 380, 360, 340, 320]
    alerts = run(state, *[(view(report(i, kafka_lag=lag, behind_batches=i), report_id=i), i)
                          for i, lag in enumerate(lags, 1)])
    assert alerts == []
    # the lag stops shrinking over the window while batches stay busy: now it is behind
    stuck = run(state, *[(view(report(i, kafka_lag=lag, behind_batches=i), report_id=i), i)
                         for i, lag in [(9, 320), (10, 325), (11, 330)]])
    assert stuck == [(Problem.BEHIND, FIRING)]
    assert state.outbox[-1].detail.startswith("input rate above processing rate for 11 ")


def test_lag_growing_over_k_reports_is_falling_behind_but_the_same_report_counts_once():
    state = HealthState()
    lags = [10, 20, 30]
    alerts = run(state, *[(view(report(i, kafka_lag=lag), report_id=i), i) for i, lag in
                          enumerate(lags, 1)])
    # the same report seen again on a later tick is not a new sample
    alerts += run(state, (view(report(3, kafka_lag=30), report_id=3), 4))
    assert alerts == []
    alerts = run(state, (view(report(5, kafka_lag=40), report_id=5), 5))
    assert alerts == [(Problem.BEHIND, FIRING)]
    assert "10 -> 40" in state.outbox[-1].detail


def test_a_growing_upstream_delta_backlog_is_falling_behind_like_growing_kafka_lag():
    state = HealthState()
    backlogs = [0, 1, 2]
    alerts = run(state, *[
        (delta_view(report(i, kafka_lag=None, upstream_versions_waiting=b), report_id=i), i)
        for i, b in enumerate(backlogs, 1)])
    assert alerts == []
    alerts = run(state, (delta_view(report(4, kafka_lag=None, upstream_versions_waiting=4),
                                    report_id=4), 4))
    assert alerts == [(Problem.BEHIND, FIRING)]
    assert state.outbox[-1].detail == (
        "upstream raw_events backlog grew over 3 consecutive reports: 0 -> 4 versions waiting")
    caught_up = report(5, kafka_lag=None, upstream_versions_waiting=0)
    assert run(state, (delta_view(caught_up, report_id=5), 5)) == [(Problem.BEHIND, RESOLVED)]


def test_dead_letter_rate_is_judged_over_a_window_of_recent_records():
    state = HealthState()
    t = HealthThresholds(dead_letter_ratio=0.1, dead_letter_window_rows=100,
                         dead_letter_min_rows=50)

    def feed(report_id: int, rows: int, dead: int) -> list[tuple[str, str]]:
        rep = report(report_id, input_rows=rows, dead_letter_rows=dead)
        return [(a.problem, a.state) for a in state.evaluate([view(rep, report_id)],
                                                             report_id, t)]

    assert feed(1, 20, 10) == []  # 20 records are too few to judge
    assert feed(2, 40, 10) == [(Problem.DEAD_LETTERS, FIRING)]  # 20 of 60
    assert feed(2, 40, 10) == []  # the same report is not counted twice
    assert feed(3, 0, 0) == []  # nothing read: no verdict, the incident stays open
    assert feed(4, 30, 0) == []  # 20 of the last 90: still open, and no second alert
    assert feed(5, 100, 1) == [(Problem.DEAD_LETTERS, RESOLVED)]  # 1 of the last 100


def test_dead_letters_of_reports_replaced_before_the_tick_still_count():
    # Three reports came between two ticks; the bad records were in the first two only.
    state = HealthState()
    t = HealthThresholds(dead_letter_ratio=0.1, dead_letter_window_rows=1000,
                         dead_letter_min_rows=50)
    reports = [(i, report(i, input_rows=rows, dead_letter_rows=dead))
               for i, (rows, dead) in enumerate([(40, 20), (40, 20), (40, 0)], start=1)]
    newest_id, newest = reports[-1]
    seen = view(newest, newest_id, recent=tuple(reports))
    alerts = state.evaluate([seen], 3, t)
    assert [(a.problem, a.state) for a in alerts] == [(Problem.DEAD_LETTERS, FIRING)]
    assert alerts[0].detail.startswith("33.3% of the last 120 records")  # 40 of 120
    assert state.evaluate([seen], 4, t) == []  # the same reports are not counted twice


def test_stopping_the_stream_resolves_its_open_incidents():
    state = HealthState()
    run(state, (view(report(1, status=Status.FAILED, error="x")), 1))
    stopped = StreamView("raw_events", running=False, ended_because="run abc ended (CANCELED)")
    assert run(state, (stopped, 2)) == [(Problem.FAILED, RESOLVED)]
    assert state.outbox[-1].detail == "run abc ended (CANCELED)"
    assert run(state, (stopped, 3)) == []


def test_clear_after_waits_for_consecutive_healthy_evaluations():
    state = HealthState()
    thresholds = HealthThresholds(clear_after=2)
    failed = view(report(1, status=Status.FAILED, error="x"))
    healthy = view(report(2), 2)
    alerts = [a.state for v, now in [(failed, 1), (healthy, 2), (failed, 3), (healthy, 4),
                                     (healthy, 5)]
              for a in state.evaluate([v], now, thresholds)]
    assert alerts == [FIRING, RESOLVED]


def test_state_survives_the_cursor_round_trip_and_a_broken_cursor_starts_over():
    state = HealthState()
    run(state, (view(report(1, status=Status.FAILED, error="x")), 1))
    restored = HealthState.from_json(state.to_json())
    assert restored.open_incidents("raw_events").keys() == {Problem.FAILED}
    assert [a.incident for a in restored.outbox] == [a.incident for a in state.outbox]
    assert run(restored, (view(report(2, status=Status.FAILED, error="x"), 2), 2)) == []
    assert HealthState.from_json("{not json").streams == {}


def test_undelivered_alerts_stay_queued_in_order_until_the_sink_accepts_them():
    state = HealthState()
    run(state, (view(report(1, status=Status.FAILED, error="x")), 1), (view(report(2), 2), 2))
    calls = []

    def broken(alert):
        calls.append(alert.state)
        raise RuntimeError("503")

    sent, errors = state.deliver(broken)
    assert (sent, errors, calls) == ([], ["503"], [FIRING])
    sent, errors = state.deliver(lambda alert: None)
    assert [a.state for a in sent] == [FIRING, RESOLVED] and not errors and not state.outbox


def test_report_round_trips_through_dagster_metadata():
    original = report(10, status=Status.FAILED, error="bad", batches=3, input_rows=7,
                      dead_letter_rows=1, last_batch_id=4)
    meta = original.to_metadata()
    assert meta["stream_status"] == "failed" and meta["input_rows"] == 7
    assert StreamReport.from_metadata(meta, 10) == original
    assert StreamReport.from_metadata({"rows_written": 1}, 10) is None
    delta = report(10, kafka_lag=None, upstream_versions_waiting=3)
    meta = delta.to_metadata()
    assert meta["upstream_versions_waiting"] == 3 and "kafka_lag" not in meta
    assert StreamReport.from_metadata(meta, 10) == delta


def test_a_report_written_before_upstream_versions_were_measured_is_still_read():
    old_metadata = {"stream_status": "running", "query": "raw_events", "batches": 2,
                    "input_rows": 5, "kafka_lag": 0,
                    "last_batch_at": 9.0, "started_at": 0.0, "rows_written": 5,
                    "mode": "continuous"}
    old = StreamReport.from_metadata(old_metadata, 10)
    assert old is not None and old.upstream_versions_waiting is None and old.input_rows == 5


@pytest.mark.parametrize("bad", [{"behind_batches": 0}, {"dead_letter_ratio": 2}])
def test_thresholds_refuse_nonsense(bad):
    with pytest.raises(ValueError):
        HealthThresholds(**bad)


def test_a_failing_expectation_alerts_once_and_resolves_once_when_it_holds_again():
    state = HealthState()
    failing = "has_id: 12.0% of 500 rows violated (allowed 5.00%)"
    views = [
        (view(report(100, failing_expectations=failing), 1), 101),
        (view(report(110, failing_expectations=failing), 2), 111),
        # No batch since the last report: nothing to judge, the incident stays open.
        (view(report(120, failing_expectations=None), 3), 121),
        (view(report(130, failing_expectations=""), 4), 131),
        (view(report(140, failing_expectations=""), 5), 141),
    ]
    assert run(state, *views) == [(Problem.EXPECTATIONS, FIRING),
                                  (Problem.EXPECTATIONS, RESOLVED)]
    assert state.outbox[0].detail == failing


def test_an_unreachable_source_alerts_once_in_red_and_resolves_once_when_it_answers():
    state = HealthState()
    away = report(100, source_unreachable="no Kafka broker answered at 127.0.0.1:9 within 5 s",
                  source_unreachable_since=95.0)
    back = report(160)
    alerts = run(state, *[(view(away, report_id=1), 100 + i) for i in range(4)],
                 (view(back, report_id=2), 161), (view(back, report_id=2), 170))
    assert alerts == [(Problem.SOURCE_UNREACHABLE, FIRING), (Problem.SOURCE_UNREACHABLE, RESOLVED)]
    firing = state.outbox[0]
    assert firing.summary == "raw_events: source unreachable"
    assert firing.detail == "no Kafka broker answered at 127.0.0.1:9 within 5 s (for 5 s)"
    assert Problem.SOURCE_UNREACHABLE.severe and Problem.FAILED.severe
    assert not Problem.STALLED.severe


def test_a_report_of_an_unreachable_source_round_trips_through_dagster_metadata():
    away = report(100.5, source_unreachable="gone", source_unreachable_since=90.25)
    assert StreamReport.from_metadata(away.to_metadata(), 100.5) == away


def test_late_rows_above_the_declared_threshold_in_the_window_alert_once_then_resolve():
    state = HealthState()
    t = HealthThresholds(late_rows_window_s=600)

    def tick(report_id: int, at: float, late: int) -> list[tuple[str, str]]:
        seen = view(report(at, late_rows=late), report_id=report_id, late_rows_alert=1000)
        return [(a.problem, a.state) for a in state.evaluate([seen], at, t)]

    assert tick(1, 100, 600) == []  # 600 in the window
    assert tick(2, 200, 600) == [(Problem.LATE_ROWS, FIRING)]  # 1,200
    assert state.outbox[0].detail == (
        "the watermark dropped 1,200 late rows in the last 10.0 min (alert above 1,000)")
    assert tick(2, 210, 600) == []  # the same report again counts once
    assert tick(3, 300, 0) == []  # still 1,200 within the last 10 minutes
    assert tick(4, 750, 0) == [(Problem.LATE_ROWS, RESOLVED)]  # report 1 and 2 fell out


def test_late_rows_are_not_judged_for_a_table_without_a_threshold():
    state = HealthState()
    alerts = state.evaluate([view(report(100, late_rows=10**6), report_id=1)], 100, T)
    assert alerts == []


def test_reports_between_two_batches_are_not_lag_samples():
    # A capped query works off its backlog with batches slower than the reports, so each lag
    # is measured up to four times; batch by batch it shrinks, and the repeats must not make
    # it look flat while the busy batches' rates say "behind".
    state = HealthState()
    reports = [(440, 1), (420, 1), (400, 1), (400, 0), (400, 0), (400, 0),
               (380, 1), (380, 0), (380, 0), (380, 0), (360, 1)]
    alerts = run(state, *[(view(report(i, kafka_lag=lag, batches=b, behind_batches=i),
                                report_id=i), i) for i, (lag, b) in enumerate(reports, 1)])
    assert alerts == []
