"""What alerts say: Dagster's own event log (the `stream_health` check), and Slack's JSON.

Delivering that JSON, and keeping the webhook's secret URL out of every message, is the
`alerting` resource's job (resources/alerting.py): monitoring uses the resource, the resource
knows nothing of stream health.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

from dagster import (
    AssetCheckEvaluation,
    AssetCheckKey,
    AssetCheckSeverity,
    AssetKey,
    DagsterInstance,
)

from stream_assets.monitoring.asset_events import asset_key
from stream_assets.monitoring.health import FIRING, RESOLVED, Alert
from stream_assets.monitoring.problems import Problem
from stream_assets.resources.alerting import AlertSink

HEALTH_CHECK = "stream_health"
# Slack's limits: header text 150 characters, section text 3000.
_HEADER_MAX = 150
_SECTION_MAX = 2900


def _when(epoch: float | None) -> str:
    if not epoch:
        return "-"
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def slack_payload(alert: Alert, ui_url: str | None = None) -> dict[str, Any]:
    """A Slack incoming-webhook body (text + blocks) that other chat tools also accept."""
    icon = ":large_green_circle:" if alert.state == RESOLVED else ":red_circle:"
    if alert.state == FIRING and not Problem(alert.problem).severe:
        icon = ":large_orange_circle:"
    text = f"{icon} {alert.summary}"
    context = [
        f"stream *{alert.stream}*",
        f"problem `{alert.problem}`",
        f"state *{alert.state}*",
        f"since {_when(alert.since)}",
    ]
    if alert.state == RESOLVED:
        context.append(f"resolved {_when(alert.at)}")
    if alert.run_id:
        run = alert.run_id[:8]
        if ui_url:
            run = f"<{ui_url.rstrip('/')}/runs/{alert.run_id}|{run}>"
        context.append(f"run {run}")
    blocks: list[dict[str, Any]] = [
        {"type": "header", "text": {"type": "plain_text", "text": _clip(text, _HEADER_MAX)}},
    ]
    if alert.detail:
        blocks.append(
            {"type": "section",
             "text": {"type": "mrkdwn", "text": _clip(f"```{alert.detail}```", _SECTION_MAX)}}
        )
    blocks.append(
        {"type": "context", "elements": [{"type": "mrkdwn", "text": " · ".join(context)}]}
    )
    return {"text": text, "blocks": blocks}


def send_alert(sink: AlertSink, alert: Alert) -> None:
    """Deliver one alert through the sink as Slack's JSON (the sink raises secret-free errors)."""
    sink.post(slack_payload(alert, sink.ui_url))


def health_evaluation(
    asset_key: AssetKey, open_incidents: dict[str, dict[str, Any]], alerts: Iterable[Alert]
) -> AssetCheckEvaluation:
    """The event-log side of an alert: the `stream_health` check of the stream's asset.

    Passes when no incident is open; a failed query makes it an ERROR, other problems WARN.
    """
    alerts = list(alerts)
    passed = not open_incidents
    severity = (
        AssetCheckSeverity.ERROR if any(Problem(p).severe for p in open_incidents)
        else AssetCheckSeverity.WARN
    )
    if passed:
        description = "; ".join(a.summary for a in alerts) or "healthy"
    else:
        description = "; ".join(
            f"{problem}: {incident.get('detail', '')}"
            for problem, incident in sorted(open_incidents.items())
        )
    return AssetCheckEvaluation(
        asset_key=asset_key,
        check_name=HEALTH_CHECK,
        passed=passed,
        severity=severity,
        description=_clip(description, 2000),
        metadata={
            "open_problems": ", ".join(sorted(open_incidents)) or "-",
            "alerts": _clip("; ".join(f"{a.summary} ({a.state})" for a in alerts), 2000),
        },
    )


def carried_health(instance: DagsterInstance, table: str) -> AssetCheckEvaluation:
    """`stream_health` for a continuous report of `table`: the health sensor's latest verdict
    (its open incidents), or healthy while it has raised none.

    The UI judges a check against the asset's latest materialization, which a continuous run
    replaces with each report; the sensor records a verdict only when an alert starts or ends.
    Carried with every report, the verdict stays on the latest materialization.
    """
    key = AssetCheckKey(asset_key(table), HEALTH_CHECK)
    record = instance.event_log_storage.get_latest_asset_check_execution_by_key([key]).get(key)
    event = record.event.dagster_event if record and record.event else None
    latest = event.event_specific_data if event else None
    if not isinstance(latest, AssetCheckEvaluation):
        return AssetCheckEvaluation(
            asset_key=key.asset_key, check_name=HEALTH_CHECK, passed=True,
            severity=AssetCheckSeverity.WARN,
            description="healthy: stream_health_sensor has raised no alert",
            metadata={"open_problems": "-"})
    # Without its target: a verdict carried forward belongs to the newest materialization.
    return AssetCheckEvaluation(
        asset_key=key.asset_key, check_name=HEALTH_CHECK, passed=latest.passed,
        severity=latest.severity, description=latest.description, metadata=latest.metadata)
