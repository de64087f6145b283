"""Where things are written at run time, and where the install keeps what it resolved.

Two roots, kept apart so that a user's project never writes into the tool's lake:

- the project's home (`home()`): tables, checkpoints, the local broker's data and the writer
  locks. STREAM_ASSETS_HOME, else `.stream_assets` in the project that is running: the dg
  project root (the nearest folder at or above the working directory whose pyproject.toml
  has a [tool.dg] section), else the working directory. In the stream_assets checkout the
  project root is the checkout, so the demo's lake stays where it always was.
- the install (`INSTALL_ROOT`): the stream_assets checkout, with the JVM sources (jvm/) and
  the jars `stream-assets setup` resolves from them (`jars_dir()`).
"""

from __future__ import annotations

import os
import tomllib
from pathlib import Path
from urllib.parse import urlparse

HOME_ENV = "STREAM_ASSETS_HOME"
JARS_ENV = "STREAM_ASSETS_JARS"
HOME_NAME = ".stream_assets"
# The stream_assets checkout this package runs from (jvm/, docs/, the resolved jars).
INSTALL_ROOT = Path(__file__).resolve().parent.parent


def _is_dg_root(folder: Path) -> bool:
    pyproject = folder / "pyproject.toml"
    if not pyproject.is_file():
        return False
    try:
        return "dg" in tomllib.loads(pyproject.read_text()).get("tool", {})
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError):
        return False  # not a project dg could load either


def project_root(start: Path | None = None) -> Path:
    """The project that is running: the nearest dg project root at or above `start` (the
    working directory), else `start` itself."""
    start = (start or Path.cwd()).resolve()
    return next((folder for folder in (start, *start.parents) if _is_dg_root(folder)), start)


def home() -> Path:
    """STREAM_ASSETS_HOME, or `.stream_assets` in the project root; deleting it resets the
    project's tables, checkpoints and local broker."""
    return Path(os.environ.get(HOME_ENV) or project_root() / HOME_NAME).resolve()


def tables_dir() -> Path:
    return home() / "tables"


def checkpoints_dir() -> Path:
    return home() / "checkpoints"


def kafka_dir() -> Path:
    return home() / "kafka"


def locks_dir() -> Path:
    return home() / "locks"


def jars_dir() -> Path:
    """Resolved JVM jars: STREAM_ASSETS_JARS (e.g. a shared, read-only copy), else
    `$STREAM_ASSETS_HOME/jars` when that is set, else the install's `.stream_assets/jars`,
    where `stream-assets setup` puts them. Never the project's: a project reuses the jars
    its stream_assets install resolved."""
    explicit = os.environ.get(JARS_ENV)
    if explicit:
        return Path(explicit).resolve()
    if os.environ.get(HOME_ENV):
        return home() / "jars"
    return (INSTALL_ROOT / HOME_NAME / "jars").resolve()


def local_path(location: str) -> str | None:
    """The filesystem path of a local location (a path or file: URI), None for remote stores
    (abfss://, s3a://…)."""
    parsed = urlparse(location)
    if parsed.scheme in ("", "file"):
        return parsed.path if parsed.scheme else location
    return None
