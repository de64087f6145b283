"""Alert sinks: a Slack-compatible webhook that never leaks its URL, and the event log."""

from __future__ import annotations

import pytest
from dagster import AssetCheckSeverity, AssetKey, EnvVar

from stream_assets.monitoring.alerts import health_evaluation, send_alert, slack_payload
from stream_assets.monitoring.health import FIRING, RESOLVED, Alert
from stream_assets.monitoring.problems import Problem
from stream_assets.resources.alerting import (
    REDACTED,
    WEBHOOK_ENV,
    AlertDeliveryFailed,
    AlertSink,
    alert_sink_from_env,
    post_webhook,
    redact,
)
from stream_assets_tests.fixtures_kafka import free_ports

pytest_plugins = ["stream_assets_tests.dagster_dev"]

SECRET_URL = "https://hooks.slack.com/services/T0001/B0001/XXXXsecretXXXX"


def alert(state: str = FIRING, problem: str = Problem.FAILED) -> Alert:
    return Alert(stream="raw_events", problem=problem, state=state,
                 summary="raw_events: query failed", detail="IOException: Mkdirs failed",
                 at=1_767_225_600.0, since=1_767_225_500.0, run_id="0123456789abcdef")


def test_slack_payload_has_fallback_text_and_blocks_within_slack_limits():
    payload = slack_payload(alert(), ui_url="http://127.0.0.1:3000/")
    assert payload["text"].startswith(":red_circle: raw_events: query failed")
    kinds = [b["type"] for b in payload["blocks"]]
    assert kinds == ["header", "section", "context"]
    context = payload["blocks"][2]["elements"][0]["text"]
    assert "<http://127.0.0.1:3000/runs/0123456789abcdef|01234567>" in context
    long = Alert(stream="s", problem="failed", state=FIRING, summary="x" * 500, detail="y" * 9000)
    payload = slack_payload(long)
    assert len(payload["blocks"][0]["text"]["text"]) <= 150
    assert len(payload["blocks"][1]["text"]["text"]) <= 3000


def test_resolved_notices_look_different_from_alerts():
    assert slack_payload(alert(RESOLVED))["text"].startswith(":large_green_circle:")
    assert slack_payload(alert(FIRING, Problem.BEHIND))["text"].startswith(":large_orange_circle:")


def test_redact_removes_the_url_and_the_token_bearing_path():
    text = (f"POST {SECRET_URL} failed: HTTPSConnectionPool(host='hooks.slack.com', port=443): "
            "Max retries exceeded with url: /services/T0001/B0001/XXXXsecretXXXX (timeout)")
    cleaned = redact(text, SECRET_URL)
    assert "XXXXsecretXXXX" not in cleaned and REDACTED in cleaned
    assert redact("nothing here", SECRET_URL) == "nothing here"
    assert redact("text", None) == "text"


def test_webhook_posts_the_slack_body_to_the_receiver(alert_receiver):
    before = len(alert_receiver.received())
    send_alert(AlertSink(webhook_url=alert_receiver.url), alert())
    messages = alert_receiver.received()[before:]
    assert [m["text"] for m in messages] == [slack_payload(alert())["text"]]


def test_a_refusing_webhook_raises_without_its_url(alert_receiver):
    alert_receiver.refuse = 1
    with pytest.raises(AlertDeliveryFailed, match="HTTP 503") as failure:
        post_webhook(alert_receiver.url, {"text": "x"})
    assert "not-a-real-secret-token" not in str(failure.value)


def test_an_unreachable_webhook_raises_without_its_url():
    (port,) = free_ports(1)
    url = f"http://127.0.0.1:{port}/services/T1/B1/very-secret-token"
    with pytest.raises(AlertDeliveryFailed) as failure:
        post_webhook(url, {"text": "x"}, timeout_s=2)
    assert "very-secret-token" not in str(failure.value)
    assert failure.value.__cause__ is None and failure.value.__suppress_context__


def test_webhook_url_comes_through_envvar_and_is_optional(monkeypatch):
    monkeypatch.delenv(WEBHOOK_ENV, raising=False)
    assert not alert_sink_from_env().has_webhook
    monkeypatch.setenv(WEBHOOK_ENV, SECRET_URL)
    sink = alert_sink_from_env()
    assert isinstance(sink.webhook_url, EnvVar) or sink.webhook_url == WEBHOOK_ENV
    assert SECRET_URL not in repr(sink)
    assert sink.safe(f"error at {SECRET_URL}") == f"error at {REDACTED}"


def test_event_log_side_is_the_stream_health_check():
    failing = health_evaluation(AssetKey("raw_events"), {"failed": {"detail": "boom"}},
                                [alert()])
    assert not failing.passed and failing.severity == AssetCheckSeverity.ERROR
    assert failing.check_name == "stream_health" and "boom" in failing.description
    behind = health_evaluation(AssetKey("raw_events"), {"behind": {"detail": "slow"}}, [])
    assert behind.severity == AssetCheckSeverity.WARN
    healthy = health_evaluation(AssetKey("raw_events"), {}, [alert(RESOLVED)])
    assert healthy.passed


def test_a_continuous_report_carries_the_sensors_latest_verdict():
    from dagster import instance_for_test

    from stream_assets.monitoring.alerts import carried_health

    with instance_for_test() as instance:
        healthy = carried_health(instance, "raw_events")
        assert healthy.passed and "no alert" in healthy.description
        behind = health_evaluation(AssetKey("raw_events"), {"behind": {"detail": "slow"}}, [])
        instance.report_runless_asset_event(behind)
        carried = carried_health(instance, "raw_events")
        assert (carried.passed, carried.severity, carried.description) == (
            False, AssetCheckSeverity.WARN, behind.description)
        assert carried.metadata["open_problems"].value == "behind"
        assert carried.target_materialization_data is None  # it targets the newest one
