"""Sensors: stream health alerts and failed-run alerts (catch-up runs: catch_up_sensor.py).

- `stream_health_sensor` reads the latest report each running stream left in Dagster's event
  log (stream_report.StreamReport, written by the continuous job) and keeps incidents in its cursor:
  one alert when a problem starts, one "resolved" notice when it ends, to the webhook and to
  the event log (the `stream_health` check of the stream's asset).
- `streaming_run_failure_alert` alerts once per failed run of any job of this code location.

The sensors run in the daemon, never in the job's process: everything they know comes from
Dagster's storage, the broker and the Delta logs on disk, so they start no Spark session.
"""

import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from functools import partial

from dagster import (
    AssetCheckResult,
    AssetChecksDefinition,
    AssetCheckSeverity,
    AssetCheckSpec,
    AssetKey,
    DagsterEventType,
    DagsterInstance,
    DagsterRun,
    DagsterRunStatus,
    DefaultSensorStatus,
    RunFailureSensorContext,
    SensorDefinition,
    SensorEvaluationContext,
    SensorResult,
    multi_asset_check,
    run_failure_sensor,
    sensor,
)

from stream_assets.continuous_runs import continuous_runs, run_tables
from stream_assets.monitoring.alerts import HEALTH_CHECK, health_evaluation, send_alert
from stream_assets.monitoring.asset_events import asset_key
from stream_assets.monitoring.health import FIRING, Alert, HealthState
from stream_assets.monitoring.problems import HealthThresholds, Problem, StreamView, problems
from stream_assets.monitoring.stream_report import Status, StreamReport
from stream_assets.resources.alerting import AlertSink
from stream_assets.tables.declaration import StreamingTable

INTERVAL_ENV = "STREAM_ASSETS_SENSOR_INTERVAL_S"


def sensor_interval(default: int) -> int:
    """Seconds between evaluations: $STREAM_ASSETS_SENSOR_INTERVAL_S, else `default`."""
    raw = os.environ.get(INTERVAL_ENV)
    return max(1, int(float(raw))) if raw else default


# -- reading the continuous job's reports from Dagster's storage -----------------------------

# Reports read per asset and kind at each tick: more than a tick's worth at the fastest
# event_interval_s, so that none goes unseen between two ticks.
RECENT_REPORTS = 25


@dataclass(frozen=True)
class LatestReport:
    report: StreamReport
    storage_id: int
    run_id: str
    # The run's reports up to this one (storage id, report), oldest first.
    recent: tuple[tuple[int, StreamReport], ...] = ()


def latest_report(instance: DagsterInstance, key: AssetKey) -> LatestReport | None:
    """The newest stream report on an asset, whether it came as observation or materialization,
    with the reports of its run that came just before it."""
    found: list[tuple[int, str, StreamReport]] = []
    cut = 0  # a full page may miss records older than its last: keep what both pages hold
    for fetch in (instance.fetch_observations, instance.fetch_materializations):
        records = fetch(key, limit=RECENT_REPORTS).records
        if len(records) == RECENT_REPORTS:
            cut = max(cut, min(record.storage_id for record in records))
        for record in records:
            event = record.asset_event
            report = None if event is None else StreamReport.from_metadata(
                event.metadata, record.timestamp)
            if report is not None:
                found.append((record.storage_id, record.run_id, report))
    if not found:
        return None
    found.sort(key=lambda f: f[0])
    storage_id, run_id, report = found[-1]
    recent = tuple((sid, rep) for sid, rid, rep in found if rid == run_id and sid >= cut)
    return LatestReport(report, storage_id, run_id, recent)


def stream_views(
    instance: DagsterInstance, catalog: Sequence[StreamingTable]
) -> list[StreamView]:
    """What is known about each declared stream now (running or not, and its last report)."""
    running = continuous_runs(instance, [DagsterRunStatus.STARTED])
    by_id = {run.run_id: run for run in running}
    views = []
    for table in catalog:
        latest = latest_report(instance, table.asset_key)
        owner = next((r for r in running if table.name in run_tables(r, catalog)), None)
        if latest is not None and latest.run_id in by_id:
            stopped = latest.report.status == Status.STOPPED
            views.append(StreamView(
                stream=table.name, running=not stopped, report=latest.report,
                report_id=latest.storage_id, run_id=latest.run_id,
                ended_because="the query was stopped" if stopped else None,
                upstream=table.upstream_tables, late_rows_alert=table.late_rows_alert,
                recent=latest.recent,
            ))
        elif owner is not None:
            record = instance.get_run_record_by_id(owner.run_id)
            started = None
            if record is not None:
                started = record.start_time or record.create_timestamp.timestamp()
            views.append(StreamView(
                stream=table.name, running=True, run_id=owner.run_id, run_started_at=started,
                upstream=table.upstream_tables, late_rows_alert=table.late_rows_alert,
            ))
        else:
            reason = None
            if latest is not None:
                run = instance.get_run_by_id(latest.run_id)
                status = run.status.value if run else "deleted"
                reason = f"run {latest.run_id[:8]} is no longer running ({status})"
            views.append(StreamView(stream=table.name, running=False, run_id=None,
                                    ended_because=reason))
    return views


# -- stream health ---------------------------------------------------------------------------

def evaluate_health(
    context: SensorEvaluationContext,
    catalog: Sequence[StreamingTable],
    thresholds: HealthThresholds,
    alerting: AlertSink,
    now: float | None = None,
) -> SensorResult:
    state = HealthState.from_json(context.cursor)
    views = stream_views(context.instance, catalog)
    now = time.time() if now is None else now
    new = state.evaluate(views, now, thresholds)
    for alert in new:
        log = context.log.warning if alert.state == FIRING else context.log.info
        log(f"{alert.summary}: {alerting.safe(alert.detail)}")
    sent, errors = state.deliver(partial(send_alert, alerting))
    for error in errors:
        context.log.error(f"alert delivery failed, will retry next tick: {alerting.safe(error)}")
    by_stream: dict[str, list[Alert]] = {}
    for alert in new:
        by_stream.setdefault(alert.stream, []).append(alert)
    events = [
        health_evaluation(asset_key(stream), state.open_incidents(stream), alerts)
        for stream, alerts in sorted(by_stream.items())
    ]
    watched = sum(1 for v in views if v.running)
    open_count = sum(len(state.open_incidents(v.stream)) for v in views)
    summary = (
        f"{watched} running stream(s), {open_count} open incident(s); "
        f"{len(new)} new alert(s), {len(sent)} delivered, {len(state.outbox)} queued"
    )
    # The tick's "View logs" in the UI: what the sensor saw, not only in a hover tooltip.
    context.log.info(summary)
    return SensorResult(cursor=state.to_json(), asset_events=events,
                        skip_reason=None if new else summary)


def build_health_sensor(
    catalog: Sequence[StreamingTable],
    thresholds: HealthThresholds | None = None,
    name: str = "stream_health_sensor",
    minimum_interval_seconds: int | None = None,
) -> SensorDefinition:
    thresholds = thresholds or HealthThresholds()
    catalog = tuple(catalog)

    @sensor(
        name=name,
        minimum_interval_seconds=minimum_interval_seconds or sensor_interval(30),
        default_status=DefaultSensorStatus.RUNNING,
        description="Alerts once when a running stream fails, stalls, falls behind or "
        "dead-letters too much, and once more when it recovers.",
    )
    def stream_health_sensor(context: SensorEvaluationContext, alerting: AlertSink):
        return evaluate_health(context, catalog, thresholds, alerting)

    return stream_health_sensor


def build_health_checks(
    catalog: Sequence[StreamingTable], thresholds: HealthThresholds | None = None
) -> AssetChecksDefinition:
    """`stream_health` on every query's main table. The health sensor records its result at
    each alert; running it by hand judges the latest report (without incident memory)."""
    thresholds = thresholds or HealthThresholds()
    catalog = tuple(catalog)
    specs = [
        AssetCheckSpec(HEALTH_CHECK, asset=t.asset_key,
                       description="The continuous query is not failed, stalled, behind, cut off "
                       "from its sources or dead-lettering above the threshold (judged by "
                       "stream_health_sensor; a continuous run carries its verdict with "
                       "each report).")
        for t in catalog
    ]

    @multi_asset_check(specs=specs, name="stream_health_checks", can_subset=True)
    def stream_health_checks(context):
        views = {v.stream: v for v in stream_views(context.instance, catalog)}
        now = time.time()
        for key in context.selected_asset_check_keys:
            view = views.get(key.asset_key.path[-1])
            found = {} if view is None or not view.running else {
                p: d for p, d in problems(view, [], now, thresholds).items() if d
            }
            yield AssetCheckResult(
                asset_key=key.asset_key,
                check_name=HEALTH_CHECK,
                passed=not found,
                severity=AssetCheckSeverity.ERROR if any(p.severe for p in found)
                else AssetCheckSeverity.WARN,
                description="; ".join(f"{p}: {d}" for p, d in found.items())
                or ("healthy" if view is not None and view.running
                    else "not running in continuous mode"),
            )

    return stream_health_checks


# -- failed runs -----------------------------------------------------------------------------

def _step_errors(instance: DagsterInstance, run_id: str, limit: int = 3) -> list[str]:
    errors = []
    for record in instance.get_records_for_run(
        run_id, of_type={DagsterEventType.STEP_FAILURE}, limit=limit
    ).records:
        event = record.event_log_entry.dagster_event
        data = getattr(event, "step_failure_data", None) if event else None
        error = getattr(data, "error", None)
        while error is not None and error.cause is not None:  # the user's error, not Dagster's
            error = error.cause
        if error is not None:
            first = error.message.strip().split("\n\tat ")[0]
            errors.append(f"{event.step_key}: {first[:800]}")
    return errors


def run_failure_alert(instance: DagsterInstance, run: DagsterRun, message: str,
                      now: float | None = None) -> Alert:
    what = ", ".join(k.to_user_string() for k in sorted(
        run.asset_selection or [], key=lambda k: k.to_user_string())) or run.job_name
    steps = _step_errors(instance, run.run_id)
    now = time.time() if now is None else now
    return Alert(
        stream=what,
        problem=Problem.RUN_FAILED.value,
        state=FIRING,
        summary=f"run of {run.job_name} failed ({what})",
        detail="\n".join([message, *steps]),
        at=now,
        since=now,
        run_id=run.run_id,
    )


def build_run_failure_sensor(
    name: str = "streaming_run_failure_alert", minimum_interval_seconds: int | None = None
) -> SensorDefinition:
    @run_failure_sensor(
        name=name,
        minimum_interval_seconds=minimum_interval_seconds or sensor_interval(30),
        default_status=DefaultSensorStatus.RUNNING,
        description="Alerts once for every failed run of this code location's jobs "
        "(continuous and catch-up).",
    )
    def streaming_run_failure_alert(context: RunFailureSensorContext, alerting: AlertSink):
        message = context.failure_event.message or "the run failed"
        alert = run_failure_alert(context.instance, context.dagster_run, message)
        context.log.error(f"{alert.summary}: {alerting.safe(alert.detail)}")
        send_alert(alerting, alert)

    return streaming_run_failure_alert
