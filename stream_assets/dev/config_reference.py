"""docs/configuration.md, rendered from the resources' and run configs' own field definitions.

The reference is generated so it cannot drift from the code: a test renders it and compares
it with the committed file. Regenerate with `python -m stream_assets.dev.config_reference`.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from pydantic import BaseModel
from pydantic_core import PydanticUndefined

from stream_assets import paths
from stream_assets.jobs import ContinuousConfig
from stream_assets.monitoring import sensors
from stream_assets.monitoring.check_config import (
    ChecksConfig,
    DeadLetterExpectation,
    Expectation,
    FreshnessExpectation,
    SchemaExpectation,
)
from stream_assets.resources import (
    DeltaLake,
    EventHubsSource,
    KafkaSource,
    SparkResource,
    alerting,
    kafka,
)
from stream_assets.tables.assets import CatchUpConfig
from stream_assets.tables.dimensions import UserDimensionConfig

TARGET = paths.INSTALL_ROOT / "docs" / "configuration.md"

RESOURCES: list[tuple[str, type[BaseModel], str]] = [
    ("spark", SparkResource, "The SparkSession: local, a cluster master, or Spark Connect."),
    ("stream_source", KafkaSource, "A Kafka cluster."),
    ("stream_source", EventHubsSource, "Azure Event Hubs through its Kafka endpoint."),
    ("lake", DeltaLake, "Where tables and checkpoints live (local paths or URIs)."),
    ("alerting", alerting.AlertSink, "Where health alerts go besides the event log."),
]
RUN_CONFIGS: list[tuple[str, type[BaseModel], str]] = [
    ("every streaming table's asset", CatchUpConfig, "A catch-up materialization."),
    ("job `continuous_streams`", ContinuousConfig, "The continuous job's one op."),
    ("`build_all_checks(config=...)`", ChecksConfig,
     "The asset checks, set in `definitions.py` (per table: `per_table`)."),
    ("`ChecksConfig.keys_not_null`, `keys_unique`", Expectation, "Each expectation has these."),
    ("`ChecksConfig.freshness`", FreshnessExpectation, "Freshness of every table."),
    ("`ChecksConfig.dead_letter_ratio`", DeadLetterExpectation, "On dead-lettering queries."),
    ("`ChecksConfig.schema_matches`", SchemaExpectation, "Against the declared schema."),
    ("asset `user_dimension`", UserDimensionConfig, "The demo's batch dimension table."),
]
ENVIRONMENT: list[tuple[str, str]] = [
    (paths.HOME_ENV, "Where the project writes at run time: `tables/`, `checkpoints/`, "
     "`kafka/` (the local broker), `locks/`, and `dagster/` where `make demo` puts "
     "DAGSTER_HOME. Default: `.stream_assets/` in the dg project root (the nearest folder at "
     "or above the working directory whose `pyproject.toml` has a `[tool.dg]` section), else "
     "in the working directory."),
    (paths.JARS_ENV, "The JVM jars' folder. Default: `$STREAM_ASSETS_HOME/jars` when "
     "STREAM_ASSETS_HOME is set, else `.stream_assets/jars/` in the stream_assets checkout, "
     "where `stream-assets setup` resolves them."),
    (kafka.BOOTSTRAP_ENV, f"Default `bootstrap_servers` (else `{kafka.DEFAULT_BOOTSTRAP}`); "
     "the local broker listens on its port."),
    (alerting.WEBHOOK_ENV, "Slack-compatible webhook for alerts (a secret; never logged)."),
    (alerting.UI_URL_ENV, "Base URL of the Dagster UI, for links in alerts."),
    (sensors.INTERVAL_ENV, "Seconds between evaluations of the health and freshness sensors."),
]


def _default(field: Any) -> str:
    if field.default_factory is kafka.default_bootstrap:
        # Read from the environment when the resource is built: say so, not this shell's value.
        return f"`${kafka.BOOTSTRAP_ENV}` or `{kafka.DEFAULT_BOOTSTRAP!r}`"
    if field.default_factory is not None:
        value = field.default_factory()
    elif field.default is PydanticUndefined:
        return "required"
    else:
        value = field.default
    if isinstance(value, BaseModel):
        return "see below"
    if value in (None, ""):
        return "unset"
    # Paths under the home folder are read from the environment when the resource is built.
    return f"`{value!r}`".replace(str(paths.home()), f"${paths.HOME_ENV}")


def _cell(text: str | None) -> str:
    return (text or "").replace("|", "\\|").replace("\n", " ")


def _table(model: type[BaseModel]) -> list[str]:
    lines = ["| field | default | meaning |", "| --- | --- | --- |"]
    for name, field in model.model_fields.items():
        lines.append(f"| `{name}` | {_cell(_default(field))} | {_cell(field.description)} |")
    return lines


def render() -> str:
    out = [
        "# Configuration reference",
        "",
        "Generated from the code by `python -m stream_assets.dev.config_reference`; a test",
        "keeps it current. Pass secrets as `dagster.EnvVar`, never as literal strings: a literal",
        "becomes a default in the job's config schema, which the Dagster UI shows.",
        "",
        "## Environment variables",
        "",
        "| variable | meaning |",
        "| --- | --- |",
        *(f"| `{name}` | {_cell(text)} |" for name, text in ENVIRONMENT),
        "",
        "## Resources (`build_definitions(resources=...)` or the component's `defs.yaml`)",
    ]
    for key, model, text in RESOURCES:
        out += ["", f"### `{model.__name__}` (resource key `{key}`)", "", text, "",
                *_table(model)]
    out += ["", "## Run and check configuration"]
    for where, model, text in RUN_CONFIGS:
        out += ["", f"### `{model.__name__}`: {where}", "", text, "", *_table(model)]
    return "\n".join(out) + "\n"


def main() -> None:
    Path(sys.argv[1] if len(sys.argv) > 1 else TARGET).write_text(render())


if __name__ == "__main__":
    main()
