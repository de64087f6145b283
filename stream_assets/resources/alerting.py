"""Where alerts are sent, as a typed resource: a webhook taking Slack's JSON, or nowhere.

Alerts always reach Dagster's event log (the sensors record them there); this resource adds
the webhook. Its URL is a secret (a Slack incoming-webhook URL is a bearer token): pass it
with `dagster.EnvVar`, so the UI and the run config show the variable's name, never the
value; it is never logged or put into metadata, and errors that might quote it (a `requests`
exception names the URL it failed on) are redacted before anyone sees them.

The resource posts JSON and knows nothing of what an alert says: monitoring/alerts.py turns
an alert into Slack's JSON and hands it here, so resources do not import monitoring.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any
from urllib.parse import quote, urlsplit

from dagster import ConfigurableResource, EnvVar
from pydantic import Field

from stream_assets.errors import StreamAssetsError

WEBHOOK_ENV = "STREAM_ASSETS_ALERT_WEBHOOK_URL"
UI_URL_ENV = "STREAM_ASSETS_UI_URL"
REDACTED = "<redacted>"


class AlertDeliveryFailed(StreamAssetsError):
    """The alert webhook could not be reached or refused the alert (message is secret-free)."""


def redact(text: str, secret: str | None) -> str:
    """`text` without the secret URL or the parts of it that identify it (path, query)."""
    if not secret or not text:
        return text
    parts = urlsplit(secret)
    candidates = {secret, secret.rstrip("/"), quote(secret, safe="")}
    if parts.query:
        candidates.add(parts.query)
        candidates.add(f"{parts.path}?{parts.query}")
    if len(parts.path.strip("/")) > 0:
        candidates.add(parts.path)
        candidates.add(parts.path.rstrip("/"))
    for candidate in sorted((c for c in candidates if len(c) > 1), key=len, reverse=True):
        text = text.replace(candidate, REDACTED)
    return text


def post_webhook(url: str, payload: Mapping[str, Any], timeout_s: float = 10.0) -> None:
    """POST the payload as JSON; raise AlertDeliveryFailed with a redacted message."""
    import requests

    try:
        response = requests.post(url, json=payload, timeout=timeout_s)
    except requests.RequestException as exc:
        raise AlertDeliveryFailed(
            f"the alert webhook could not be reached ({type(exc).__name__}: "
            f"{redact(str(exc), url)}); check {WEBHOOK_ENV}"
        ) from None
    if response.status_code >= 300:
        raise AlertDeliveryFailed(
            f"the alert webhook answered HTTP {response.status_code}: "
            f"{redact(response.text[:200], url)}"
        )


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

    def post(self, payload: Mapping[str, Any]) -> None:
        """Deliver one alert's JSON (monitoring.alerts.send_alert makes it); raises
        AlertDeliveryFailed, whose message never holds the URL. No webhook: nothing to do."""
        url = self._url()
        if url:
            post_webhook(url, payload, self.timeout_s)

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
