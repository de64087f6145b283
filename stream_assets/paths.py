"""Where the project writes at run time: everything lives below STREAM_ASSETS_HOME."""

from __future__ import annotations

import os
from pathlib import Path
from urllib.parse import urlparse

HOME_ENV = "STREAM_ASSETS_HOME"
PROJECT_ROOT = Path(__file__).resolve().parent.parent


def home() -> Path:
    """STREAM_ASSETS_HOME, or `.stream_assets` in the project root; deleting it resets the demo."""
    return Path(os.environ.get(HOME_ENV) or PROJECT_ROOT / ".stream_assets").resolve()


def tables_dir() -> Path:
    return home() / "tables"


def checkpoints_dir() -> Path:
    return home() / "checkpoints"


def kafka_dir() -> Path:
    return home() / "kafka"


def locks_dir() -> Path:
    return home() / "locks"


def jars_dir() -> Path:
    """Resolved JVM jars; STREAM_ASSETS_JARS may point at a shared, read-only copy."""
    return Path(os.environ.get("STREAM_ASSETS_JARS") or home() / "jars").resolve()


def local_path(location: str) -> str | None:
    """The filesystem path of a local location (a path or file: URI), None for remote stores
    (abfss://, s3a://…)."""
    parsed = urlparse(location)
    if parsed.scheme in ("", "file"):
        return parsed.path if parsed.scheme else location
    return None
