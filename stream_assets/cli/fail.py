"""How a command ends on a problem the user can act on."""

from __future__ import annotations

import sys
from typing import NoReturn

import click

from stream_assets.errors import StreamAssetsError


def fail(exc: StreamAssetsError) -> NoReturn:
    """Print the problem in plain words (never a stack trace) and exit with status 1."""
    click.echo(f"error: {exc}", err=True)
    sys.exit(1)
