"""The package's import directions ([tool.importlinter] in pyproject.toml) hold.

`make lint` runs lint-imports as well, but the README's and CI's command is `make test`: this
keeps the contracts there too.
"""

from __future__ import annotations

import os
import pkgutil
import subprocess
import sys
from pathlib import Path

from importlinter.api import read_configuration

import stream_assets

ROOT = Path(__file__).resolve().parents[1]
PYPROJECT = ROOT / "pyproject.toml"


def test_import_contracts_are_kept():
    # A process of its own, analysing this checkout's package (PYTHONPATH first) whatever
    # else is installed; no cache, so nothing is written into the work tree.
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p)}
    result = subprocess.run(
        [sys.executable, "-c", "from importlinter.cli import lint_imports_command as c; c()",
         "--no-cache", "--no-logo", str(PYPROJECT)],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 broken" in result.stdout, result.stdout


def test_every_production_module_is_kept_from_dev():
    """The no-dev contract lists its sources one by one (a forbidden contract has no "all
    but"): a new top-level module must join that list, or it could import dev/ unnoticed."""
    contracts = read_configuration(str(PYPROJECT))["contracts_options"]
    no_dev = next(c for c in contracts if c.get("id") == "no-dev-in-production")
    top_level = {f"stream_assets.{m.name}" for m in pkgutil.iter_modules(stream_assets.__path__)}
    assert set(no_dev["source_modules"]) == top_level - {"stream_assets.cli", "stream_assets.dev"}
