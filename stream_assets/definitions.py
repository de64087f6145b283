"""The demo's code location: the seed pipeline's tables through the public API."""

from __future__ import annotations

from stream_assets.dev.users import demo_users
from stream_assets.project import build_definitions
from stream_assets.tables.catalog import TABLES
from stream_assets.tables.dimensions import build_user_dimension

defs = build_definitions(TABLES, assets=[build_user_dimension(demo_users)])
