"""A user's project writes its lake in the project, never into the stream_assets checkout.

Without STREAM_ASSETS_HOME the tables, checkpoints, broker data and locks go to
`.stream_assets/` in the dg project root above the working directory (else in the working
directory), while the JVM jars stay where `stream-assets setup` resolved them: the install.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from stream_assets import jars, paths
from stream_assets.errors import MissingJars

ROOT = Path(__file__).resolve().parents[1]
DG_PYPROJECT = """\
[project]
name = "shop"
version = "0.1.0"

[tool.dg]
directory_type = "project"

[tool.dg.project]
root_module = "shop"
"""
# What a project's code location sees: the defaults build_definitions binds.
SHOW_DEFAULTS = """\
import json
from stream_assets import jars, paths
from stream_assets.project import default_resources

lake = default_resources()["lake"]
print(json.dumps({
    "install": str(paths.INSTALL_ROOT),
    "tables_root": lake.tables_root,
    "checkpoints_root": lake.checkpoints_root,
    "kafka": str(paths.kafka_dir()),
    "locks": str(paths.locks_dir()),
    "spark_jars": str(jars.group_dir("spark")),
}))
"""


def defaults_seen_from(cwd: Path) -> dict[str, str]:
    """default_resources() in a fresh interpreter started in `cwd`, as a user's `dg dev` or
    script would, with neither STREAM_ASSETS_HOME nor STREAM_ASSETS_JARS set."""
    env = {k: v for k, v in os.environ.items()
           if k not in (paths.HOME_ENV, paths.JARS_ENV)}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH")) if p)
    done = subprocess.run([sys.executable, "-c", SHOW_DEFAULTS], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    seen = json.loads(done.stdout.strip().splitlines()[-1])
    assert Path(seen["install"]) == ROOT, "the subprocess must run this checkout's code"
    return seen


def assert_lake_under(seen: dict[str, str], home: Path) -> None:
    home = home.resolve()
    assert Path(seen["tables_root"]) == home / "tables"
    assert Path(seen["checkpoints_root"]) == home / "checkpoints"
    assert Path(seen["kafka"]) == home / "kafka"
    assert Path(seen["locks"]) == home / "locks"


def test_a_project_folder_without_stream_assets_home_keeps_its_lake_in_that_folder(tmp_path):
    project = tmp_path / "scripts_only"
    project.mkdir()
    seen = defaults_seen_from(project)
    assert_lake_under(seen, project / ".stream_assets")
    # The jars are the install's, resolved once by `stream-assets setup`.
    assert Path(seen["spark_jars"]) == ROOT / ".stream_assets" / "jars" / "spark"


def test_inside_a_dg_project_the_lake_is_at_the_project_root(tmp_path):
    project = tmp_path / "shop"
    below = project / "src" / "shop" / "defs"
    below.mkdir(parents=True)
    (project / "pyproject.toml").write_text(DG_PYPROJECT)
    # A pyproject.toml without [tool.dg] on the way up is not the dg project's root.
    (project / "src" / "pyproject.toml").write_text('[project]\nname = "other"\n')
    for cwd in (project, below):
        seen = defaults_seen_from(cwd)
        assert_lake_under(seen, project / ".stream_assets")
        assert Path(seen["spark_jars"]) == ROOT / ".stream_assets" / "jars" / "spark"


def test_in_the_stream_assets_checkout_the_demo_lake_stays_where_it_was(monkeypatch):
    monkeypatch.delenv(paths.HOME_ENV, raising=False)
    for cwd in (ROOT, ROOT / "stream_assets"):
        monkeypatch.chdir(cwd)
        assert paths.home() == ROOT / ".stream_assets"


def test_jars_resolve_from_the_install_while_a_project_runs(tmp_path, monkeypatch):
    install = tmp_path / "install"
    spark_jars = install / ".stream_assets" / "jars" / "spark"
    spark_jars.mkdir(parents=True)
    (spark_jars / "delta-spark_2.13-4.0.0.jar").write_bytes(b"")
    project = tmp_path / "project"
    project.mkdir()
    monkeypatch.setattr(paths, "INSTALL_ROOT", install)
    monkeypatch.delenv(paths.HOME_ENV, raising=False)
    monkeypatch.delenv(paths.JARS_ENV, raising=False)
    monkeypatch.chdir(project)

    assert jars.jars("spark") == [spark_jars / "delta-spark_2.13-4.0.0.jar"]
    assert paths.tables_dir() == project / ".stream_assets" / "tables"
    with pytest.raises(MissingJars, match="run 'stream-assets setup'"):
        jars.jars("kafka")


def test_stream_assets_home_and_stream_assets_jars_still_decide_when_set(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv(paths.HOME_ENV, str(tmp_path / "home"))
    monkeypatch.delenv(paths.JARS_ENV, raising=False)
    assert paths.tables_dir() == tmp_path / "home" / "tables"
    assert paths.jars_dir() == tmp_path / "home" / "jars"
    monkeypatch.setenv(paths.JARS_ENV, str(tmp_path / "shared_jars"))
    assert paths.jars_dir() == tmp_path / "shared_jars"
