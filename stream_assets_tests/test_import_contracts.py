"""The package's import directions ([tool.importlinter] in pyproject.toml) hold.

`make lint` runs lint-imports as well, but the README's and CI's command is `make test`: this
keeps the contracts there too.
"""

from __future__ import annotations

import os
import pkgutil
import re
import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

from importlinter.api import read_configuration

import stream_assets
import stream_assets.monitoring
import stream_assets.tables

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


def _contract(contract_id: str) -> dict[str, Any]:
    contracts = read_configuration(str(PYPROJECT))["contracts_options"]
    return next(c for c in contracts if c.get("id") == contract_id)


def _modules(package: ModuleType) -> set[str]:
    return {f"{package.__name__}.{m.name}" for m in pkgutil.iter_modules(package.__path__)}


def test_every_production_module_is_kept_from_dev():
    """The no-dev contract lists its sources one by one (a forbidden contract has no "all
    but"): a new top-level module must join that list, or it could import dev/ unnoticed."""
    sources = set(_contract("no-dev-in-production")["source_modules"])
    assert sources == _modules(stream_assets) - {"stream_assets.cli", "stream_assets.dev"}


def test_every_module_of_the_split_packages_has_a_layer():
    """monitoring and tables are layered module by module, which the layers contract's own
    exhaustiveness check cannot see into: a new module there must be given its layer."""
    layered = {
        f"stream_assets.{name.strip()}"
        for layer in _contract("layers")["layers"]
        for name in re.split(r"[|:]", layer)
    }
    for package in (stream_assets.monitoring, stream_assets.tables):
        assert _modules(package) <= layered, sorted(_modules(package) - layered)
