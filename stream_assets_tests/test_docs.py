"""The configuration reference is generated from the code; it must match what is committed."""

from __future__ import annotations

from stream_assets.dev.config_reference import TARGET, render


def test_configuration_reference_matches_the_code():
    assert TARGET.read_text() == render(), (
        "docs/configuration.md is out of date: run "
        "`.venv/bin/python -m stream_assets.dev.config_reference`"
    )


def test_every_field_has_a_description():
    undocumented = [line for line in render().splitlines() if line.endswith("|  |")]
    assert not undocumented, undocumented
