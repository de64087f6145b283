"""The one Definitions object: assets, checks, sensors, jobs and resources."""

from __future__ import annotations

from dagster import Definitions, in_process_executor

from stream_assets.dev.users import demo_users
from stream_assets.jobs import build_continuous_job
from stream_assets.monitoring.checks import ChecksConfig, build_all_checks
from stream_assets.monitoring.sensors import (
    build_catch_up_sensor,
    build_health_checks,
    build_health_sensor,
    build_run_failure_sensor,
)
from stream_assets.resources import DeltaLake, KafkaSource, SparkResource
from stream_assets.resources.alerting import alert_sink_from_env
from stream_assets.tables.assets import build_asset, source_specs
from stream_assets.tables.catalog import TABLES
from stream_assets.tables.dimensions import build_user_dimension

defs = Definitions(
    assets=[
        *source_specs(TABLES),
        build_user_dimension(demo_users),
        *(build_asset(t) for t in TABLES),
    ],
    asset_checks=[
        # Unclicked impressions have no click: that key may be null by design.
        *build_all_checks(TABLES, ChecksConfig(nullable_keys={"impression_clicks": ["click_id"]})),
        build_health_checks(TABLES),
    ],
    jobs=[build_continuous_job(TABLES)],
    sensors=[
        build_health_sensor(TABLES),
        build_run_failure_sensor(),
        build_catch_up_sensor(TABLES),
    ],
    resources={
        "spark": SparkResource(),
        "lake": DeltaLake(),
        "stream_source": KafkaSource(),
        "alerting": alert_sink_from_env(),
    },
    # Every step of a run shares one process and so one SparkSession: the default
    # multiprocess executor would start a JVM per asset and per check.
    executor=in_process_executor,
)
