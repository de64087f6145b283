"""The API reference is generated from the public names' docstrings; it must match the code."""

from __future__ import annotations

import os
import subprocess
import sys

import stream_assets
from stream_assets import paths
from stream_assets.dev import api_reference
from stream_assets.dev.api_reference import GROUPS, METHODS, TARGET, render

REGENERATE = "run `.venv/bin/python -m stream_assets.dev.api_reference`"


def test_api_reference_matches_the_code():
    assert TARGET.read_text() == render(), f"docs/api.md is out of date: {REGENERATE}"


def test_every_public_name_is_in_exactly_one_group():
    grouped = [name for _, _, names in GROUPS for name in names]
    assert sorted(grouped) == sorted(stream_assets.__all__), (
        "api_reference.GROUPS must list each name of stream_assets.__all__ once"
    )
    text = render()
    assert [name for name in stream_assets.__all__ if f"### `{name}`" not in text] == []


def test_every_public_name_has_a_docstring_of_its_own():
    undocumented = [name for name in stream_assets.__all__
                    if not api_reference.docstring(api_reference.public(name), name).strip()]
    assert undocumented == []
    methods = [f"{cls}.{name}" for cls, names in METHODS.items() for name in names
               if not (getattr(api_reference.public(cls), name).__doc__ or "").strip()]
    assert methods == []


def test_reference_shows_no_object_addresses_or_placeholders():
    text = render()
    for unstable in (" at 0x", "<factory>", "<class ", "PydanticUndefined"):
        assert unstable not in text


def test_rendering_starts_no_jvm_and_ignores_the_environment():
    """`--check` in a fresh interpreter, under another home and broker: the same text, and
    no Spark gateway (a JVM) was started to render it."""
    script = (
        "import sys\n"
        "from pyspark import SparkContext\n"
        "from stream_assets.dev.api_reference import main\n"
        "code = main(['--check'])\n"
        "assert SparkContext._gateway is None, 'rendering the API reference started a JVM'\n"
        "sys.exit(code)\n"
    )
    env = {**os.environ, paths.HOME_ENV: "/nonexistent/other-home",
           "STREAM_ASSETS_KAFKA_BOOTSTRAP": "broker.elsewhere:19092"}
    result = subprocess.run([sys.executable, "-c", script], cwd=paths.INSTALL_ROOT, env=env,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
