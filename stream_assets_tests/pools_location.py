"""The code location test_ops_pools.py loads in a gRPC server, as a deployment would.

raw_events on the test's topic and lake: the server and its run workers read them from the
environment they inherit from the test (POOLS_TEST_*).
"""

from __future__ import annotations

import os

from stream_assets import build_definitions
from stream_assets.resources import DeltaLake, KafkaSource, SparkResource
from stream_assets.tables.catalog import raw_events

_ROOT = os.environ["POOLS_TEST_ROOT"]

defs = build_definitions(
    [raw_events],
    resources={
        # One run at a time holds a JVM here: the pools serialize them.
        "spark": SparkResource(master="local[2]", spark_config={
            "spark.sql.shuffle.partitions": "2", "spark.ui.enabled": "false"}),
        "lake": DeltaLake(tables_root=f"{_ROOT}/tables", checkpoints_root=f"{_ROOT}/checkpoints"),
        "stream_source": KafkaSource(bootstrap_servers=os.environ["POOLS_TEST_BOOTSTRAP"],
                                     topic_names={"events": os.environ["POOLS_TEST_TOPIC"]}),
    },
)
