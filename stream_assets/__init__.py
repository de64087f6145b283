"""Real-time Delta Lake tables fed by Spark Structured Streaming, as Dagster assets.

The public API: declare tables with `StreamingTable` (sources from `kafka_topic`, `upstream`
and `static`, a sink `DeltaAppend` or `DeltaMerge`), then turn them into a Dagster code location
with `build_definitions`. A topic's record rules may be field checks its parser judges as it
reads: `TextCheck`, `YearRange`. docs/architecture.md shows how a declaration becomes a query.

Names are imported on first use, so the `stream-assets` CLI starts without Spark or Dagster.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

_EXPORTS = {
    "StreamingTable": "stream_assets.tables.declaration",
    "Source": "stream_assets.tables.sources",
    "KafkaTopic": "stream_assets.tables.sources",
    "DeltaStream": "stream_assets.tables.sources",
    "StaticTable": "stream_assets.tables.sources",
    "Parser": "stream_assets.tables.sources",
    "kafka_topic": "stream_assets.tables.sources",
    "TextCheck": "stream_assets.records.checks",
    "YearRange": "stream_assets.records.checks",
    "upstream": "stream_assets.tables.sources",
    "static": "stream_assets.tables.sources",
    "Sink": "stream_assets.tables.writes",
    "DeltaAppend": "stream_assets.tables.writes",
    "DeltaMerge": "stream_assets.tables.writes",
    "Maintenance": "stream_assets.tables.maintenance",
    "DataExpectation": "stream_assets.tables.expectations",
    "expect": "stream_assets.tables.expectations",
    "expect_or_drop": "stream_assets.tables.expectations",
    "expect_or_fail": "stream_assets.tables.expectations",
    "build_definitions": "stream_assets.project",
    "StreamingTablesComponent": "stream_assets.component",
    "default_resources": "stream_assets.project",
    "ChecksConfig": "stream_assets.monitoring.checks",
    "SparkResource": "stream_assets.resources",
    "DeltaLake": "stream_assets.resources",
    "KafkaSource": "stream_assets.resources",
    "EventHubsSource": "stream_assets.resources",
    "DeclarationError": "stream_assets.errors",
    "StreamAssetsError": "stream_assets.errors",
}

__all__ = [
    "ChecksConfig",
    "DataExpectation",
    "DeclarationError",
    "DeltaAppend",
    "DeltaLake",
    "DeltaMerge",
    "DeltaStream",
    "EventHubsSource",
    "KafkaSource",
    "KafkaTopic",
    "Maintenance",
    "Parser",
    "Sink",
    "Source",
    "SparkResource",
    "StaticTable",
    "StreamAssetsError",
    "StreamingTable",
    "StreamingTablesComponent",
    "TextCheck",
    "YearRange",
    "build_definitions",
    "default_resources",
    "expect",
    "expect_or_drop",
    "expect_or_fail",
    "kafka_topic",
    "static",
    "upstream",
]

if TYPE_CHECKING:
    from stream_assets.component import StreamingTablesComponent
    from stream_assets.errors import DeclarationError, StreamAssetsError
    from stream_assets.monitoring.check_config import ChecksConfig
    from stream_assets.project import build_definitions, default_resources
    from stream_assets.records.checks import TextCheck, YearRange
    from stream_assets.resources import DeltaLake, EventHubsSource, KafkaSource, SparkResource
    from stream_assets.tables.declaration import StreamingTable
    from stream_assets.tables.expectations import (
        DataExpectation,
        expect,
        expect_or_drop,
        expect_or_fail,
    )
    from stream_assets.tables.maintenance import Maintenance
    from stream_assets.tables.sources import (
        DeltaStream,
        KafkaTopic,
        Parser,
        Source,
        StaticTable,
        kafka_topic,
        static,
        upstream,
    )
    from stream_assets.tables.writes import DeltaAppend, DeltaMerge, Sink


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'stream_assets' has no attribute {name!r}")
    value = getattr(import_module(_EXPORTS[name]), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return [*globals(), *__all__]
