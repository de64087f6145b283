"""Where alerts are sent, as a typed resource: a webhook taking Slack's JSON, or nowhere.

Alerts always reach Dagster's event log (the sensors record them there); this resource adds
the webhook. Its URL is a secret: pass it with `dagster.EnvVar`, so the UI and the run config
show the variable's name, never the value.
"""

from __future__ import annotations

import os

from dagster import ConfigurableResource, EnvVar
from pydantic import Field

from stream_assets.monitoring.alerts import post_webhook, redact, slack_payload
from stream_assets.monitoring.health import Alert

WEBHOOK_ENV = "STREAM_ASSETS_ALERT_WEBHOOK_URL"
UI_URL_ENV = "STREAM_ASSETS_UI_URL"


class AlertSink(ConfigurableResource):
    """Sends alerts to a Slack-compatible incoming webhook when one is configured."""

    webhook_url: str | None = Field(
        default=None,
        description=f"Secret: pass dagster.EnvVar('{WEBHOOK_ENV}'). Unset: event log only.",
    )
    ui_url: str | None = Field(
        default=None, description="Base URL of the Dagster UI, for links to runs in alerts."
    )
    timeout_s: float = Field(default=10.0, description="Per-request timeout of the webhook.")

    def _url(self) -> str | None:
        # Dagster resolves EnvVar fields when it initialises the resource; a sink used
        # directly (scripts, tests) resolves it here, at the last moment.
        value = self.webhook_url
        if isinstance(value, EnvVar):
            value = value.get_value()
        return value or None

    @property
    def has_webhook(self) -> bool:
        return bool(self.webhook_url)

    def send(self, alert: Alert) -> None:
        """Deliver one alert; raises AlertDeliveryFailed, whose message never holds the URL."""
        url = self._url()
        if url:
            post_webhook(url, slack_payload(alert, self.ui_url), self.timeout_s)

    def safe(self, text: str) -> str:
        """Any text with the webhook URL removed, for logs and metadata."""
        return redact(text, self._url())


def alert_sink_from_env() -> AlertSink:
    """The webhook from $STREAM_ASSETS_ALERT_WEBHOOK_URL (through EnvVar) when it is set.

    An unset EnvVar fails at resource initialisation, which would break every sensor of a
    deployment that wants no webhook; so the variable is only referenced when present.
    """
    ui_url = os.environ.get(UI_URL_ENV) or None
    if os.environ.get(WEBHOOK_ENV):
        return AlertSink(webhook_url=EnvVar(WEBHOOK_ENV), ui_url=ui_url)
    return AlertSink(ui_url=ui_url)
