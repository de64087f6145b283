"""How each derived check is configured: on or off, WARN or ERROR, blocking, and its limits.

`ChecksConfig` is part of the public API (`stream_assets.ChecksConfig`): `build_definitions`
and the component take one, and `checks_per_table` overrides it for named queries.
"""

from typing import Literal

from dagster import Config
from pydantic import Field

Severity = Literal["WARN", "ERROR"]

# The derived checks' names, as Dagster shows them on each table.
FRESHNESS = "freshness"
DEAD_LETTER_RATIO = "dead_letter_ratio"
SCHEMA = "schema"
KEYS_NOT_NULL = "keys_not_null"
KEYS_UNIQUE = "keys_unique"
SMALL_FILES = "small_files"


class Expectation(Config):
    """Whether a check runs, and what a failure means: a warning or an error."""

    enabled: bool = Field(default=True, description="Off: the check is not defined at all.")
    severity: Severity = Field(default="ERROR", description="WARN or ERROR when it fails.")
    blocking: bool = Field(
        default=False, description="A failed ERROR check stops downstream materializations."
    )


class FreshnessExpectation(Expectation):
    severity: Severity = Field(default="WARN", description="WARN or ERROR when it fails.")
    max_age_minutes: float = Field(
        default=60.0, description="The table's last Delta commit must be at most this old."
    )


class DeadLetterExpectation(Expectation):
    severity: Severity = Field(default="WARN", description="WARN or ERROR when it fails.")
    max_ratio: float = Field(
        default=0.05, description="Dead letters / all records read, over the whole tables."
    )


class SmallFilesExpectation(Expectation):
    severity: Severity = Field(default="WARN", description="WARN or ERROR when it fails.")
    max_files: int = Field(
        default=1000, description="Live files the table may hold before their size is judged "
        "(the maintain_tables job compacts them; docs/operations.md, Maintenance).")
    min_average_mb: float = Field(
        default=16.0, description="Above max_files, the average live file must be at least "
        "this large (MB), else the table has too many small files.")


class SchemaExpectation(Expectation):
    allow_extra_columns: bool = Field(
        default=True, description="Columns beyond the declared ones (mergeSchema) pass."
    )


class ChecksConfig(Config):
    """The derived asset checks every table gets: one setting per kind of check.

    `build_definitions(checks=...)` applies it to every table, `checks_per_table={name: ...}`
    to the named ones (the component's `checks` and `checks_per_table` alike). Each check's
    fields (enabled, severity, blocking and its limit): docs/configuration.md.
    """

    freshness: FreshnessExpectation = Field(
        default_factory=FreshnessExpectation, description="Last Delta commit recent enough."
    )
    dead_letter_ratio: DeadLetterExpectation = Field(
        default_factory=DeadLetterExpectation, description="Share of records dead-lettered."
    )
    schema_matches: SchemaExpectation = Field(
        default_factory=SchemaExpectation, description="Columns and types as declared."
    )
    keys_not_null: Expectation = Field(
        default_factory=Expectation, description="Declared key columns hold no nulls."
    )
    keys_unique: Expectation = Field(
        default_factory=Expectation, description="Declared keys identify one row each."
    )
    small_files: SmallFilesExpectation = Field(
        default_factory=SmallFilesExpectation, description="Not too many small files.",
    )
    nullable_keys: dict[str, list[str]] = Field(
        default_factory=dict,
        description="Key columns that may be null, per table (the right side of an outer "
        "join), e.g. {'impression_clicks': ['click_id']}.",
    )
