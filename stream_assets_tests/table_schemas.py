"""The Delta schemas of the demo's tables as a local materialization writes them.

`table_schemas.json` beside this module holds, per table, its schema and partition columns as
delta-rs reads them from the Delta log. test_streaming_tables.py checks that its local
materialization writes exactly these, and test_spark_connect.py that a materialization
through Spark Connect does too, so the two modules compare Connect with local without a second
run of either. A deliberate change to a demo table's columns changes this file with it:
`STREAM_ASSETS_WRITE_TABLE_SCHEMAS=1` on test_streaming_tables.py writes it from that run
(then read the diff: it is what a user's tables will look like).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from stream_assets.resources import DeltaLake
from stream_assets_tests.fixtures_s3 import delta_rs

LOCAL_SCHEMAS = Path(__file__).with_name("table_schemas.json")


def local_schemas(written: dict[str, dict] | None = None) -> dict[str, dict]:
    """The file's schemas; with STREAM_ASSETS_WRITE_TABLE_SCHEMAS=1, `written` replaces it."""
    if written is not None and os.environ.get("STREAM_ASSETS_WRITE_TABLE_SCHEMAS") == "1":
        LOCAL_SCHEMAS.write_text(json.dumps(written, indent=1) + "\n")
    return json.loads(LOCAL_SCHEMAS.read_text())


def delta_schemas(lake: DeltaLake, tables: list[str]) -> dict[str, dict]:
    """Each table's schema and partition columns, read by delta-rs (which refuses a table it
    cannot read, a collated string column for one)."""
    out = {}
    for table in tables:
        opened = delta_rs(lake, table)
        out[table] = {"schema": json.loads(opened.schema().to_json()),
                      "partition_columns": list(opened.metadata().partition_columns)}
    return out


def logged_schemas(table_path: str) -> list[str]:
    """Every schemaString the table's Delta log holds (one per metaData action), read from
    its commit files on a local disk."""
    log = Path(table_path) / "_delta_log"
    found = []
    for commit in sorted(log.glob("*.json")):
        for line in commit.read_text().splitlines():
            meta = json.loads(line).get("metaData") if line.strip() else None
            if meta is not None:
                found.append(meta["schemaString"])
    return found
