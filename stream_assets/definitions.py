"""The one Definitions object: assets, checks, sensors, jobs and resources."""

from __future__ import annotations

from dagster import Definitions

from stream_assets.resources import DeltaLake, KafkaSource, SparkResource
from stream_assets.tables.assets import build_asset, source_specs
from stream_assets.tables.catalog import TABLES
from stream_assets.tables.dimensions import user_dimension

defs = Definitions(
    assets=[*source_specs(TABLES), user_dimension, *(build_asset(t) for t in TABLES)],
    resources={
        "spark": SparkResource(),
        "lake": DeltaLake(),
        "stream_source": KafkaSource(),
    },
)
