"""The Dagster events a table's runs report, built in one place for both modes.

A catch-up run reports from inside its asset's step, where Dagster wants `MaterializeResult`
and `AssetCheckResult` (they fulfil the step's asset outputs and check specs); the continuous
job reports from an op that declares no assets, where the same facts must be
`AssetMaterialization` and `AssetCheckEvaluation`, marked `mode: continuous`. `AssetEvents`
picks the type from the mode, as dagster-dbt's event iterator does from its context, so the
figures, verdicts and texts that callers assemble reach Dagster alike from either mode.

`asset_key` is the one place a table's name becomes its asset's key (StreamingTable.asset_key
and asset_key_of use it; so do the places that know a table only by name).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from dagster import (
    AssetCheckEvaluation,
    AssetCheckResult,
    AssetCheckSeverity,
    AssetKey,
    AssetMaterialization,
    AssetObservation,
    MaterializeResult,
)

from stream_assets.tables import expectations as quality

# On every event of a continuous run: the UI's metadata tells which mode wrote what it shows.
MODE_KEY = "mode"
CONTINUOUS = "continuous"

Materialization = MaterializeResult | AssetMaterialization
CheckEvent = AssetCheckResult | AssetCheckEvaluation


def asset_key(table: str) -> AssetKey:
    """The asset key of a Delta table the project writes (a query's table, its dead letters)."""
    return AssetKey(table)


@dataclass(frozen=True)
class AssetEvents:
    """Builds the events of one mode: `AssetEvents()` in a catch-up asset's step,
    `AssetEvents(continuous=True)` in the continuous job's op."""

    continuous: bool = False

    def _metadata(self, metadata: Mapping[str, Any]) -> dict[str, Any]:
        return {**metadata, MODE_KEY: CONTINUOUS} if self.continuous else dict(metadata)

    def materialization(self, table: str, metadata: Mapping[str, Any],
                        description: str | None = None) -> Materialization:
        """The table changed; `description` is what the continuous run's event says of it
        (a catch-up run's step says it in its log)."""
        if self.continuous:
            return AssetMaterialization(asset_key(table), description=description,
                                        metadata=self._metadata(metadata))
        return MaterializeResult(asset_key=asset_key(table), metadata=dict(metadata))

    def observation(self, table: str, metadata: Mapping[str, Any],
                    description: str | None = None) -> AssetObservation:
        """What is known of the table without it having changed (a heartbeat, a reset)."""
        return AssetObservation(asset_key(table), description=description,
                                metadata=self._metadata(metadata))

    def check(self, table: str, check: str, passed: bool, severity: str | AssetCheckSeverity,
              description: str, metadata: Mapping[str, Any]) -> CheckEvent:
        """One asset check's verdict on the table."""
        fields: dict[str, Any] = {
            "asset_key": asset_key(table), "check_name": check, "passed": passed,
            "severity": AssetCheckSeverity(severity), "description": description,
            "metadata": self._metadata(metadata),
        }
        return AssetCheckEvaluation(**fields) if self.continuous else AssetCheckResult(**fields)

    def expectations(self, table: str, outcomes: Iterable[quality.Outcome]) -> list[CheckEvent]:
        """The table's expectations' checks, one per verdict."""
        return [self.check(table, o.expectation.name, o.passed, o.severity, o.description,
                           o.metadata()) for o in outcomes]
