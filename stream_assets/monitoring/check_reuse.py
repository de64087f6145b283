"""A derived check's verdict told without Spark: from the newest commit files (freshness),
from its last completed verdict when the tables are at the versions it read, or from the row
counts the materializations recorded (the dead-letter ratio). checks.py asks here first and
starts a session only for the checks left.
"""

from __future__ import annotations

from typing import Any

from dagster import AssetCheckKey, MetadataValue

# Dagster does not export the status of a check's execution; the event log storage is the
# only place that says which past evaluations completed.
from dagster._core.storage.asset_check_execution_record import AssetCheckExecutionRecordStatus

from stream_assets.delta_log import commit_of
from stream_assets.monitoring.asset_events import asset_key
from stream_assets.monitoring.check_config import (
    DEAD_LETTER_RATIO,
    FRESHNESS,
    DeadLetterExpectation,
    Expectation,
    FreshnessExpectation,
)
from stream_assets.monitoring.check_evaluations import (
    Outcome,
    check_dead_letter_ratio,
    freshness_outcome,
)
from stream_assets.monitoring.metadata import recorded_state

# In each evaluation's metadata: the Delta versions it read, so an unchanged table's verdict
# can be reported again without reading it (`without_spark`).
VERSIONS_KEY = "delta_versions"
REUSED = " (table unchanged since this verdict: same Delta commits)"


def commits_read(lake: Any, name: str, check: str, dead_letters: str | None = None
                 ) -> dict[str, tuple[int, float] | None]:
    """The newest commit (version, commit file time) of each table a check's verdict depends
    on: the table's, and for the dead-letter ratio its dead letters' too; None where it cannot
    be told without Spark."""
    names = [name]
    if check == DEAD_LETTER_RATIO and dead_letters is not None:
        names.append(dead_letters)
    return {n: commit_of(lake.table_path(n), lake.files) for n in names}


def versions_read(lake: Any, name: str, check: str, dead_letters: str | None = None
                  ) -> dict[str, str | None]:
    """`commits_read` as "version@commit time" (a table deleted and rebuilt to the same
    version has other commit times)."""
    return {n: None if c is None else _stamp(c)
            for n, c in commits_read(lake, name, check, dead_letters).items()}


def _stamp(commit: tuple[int, float]) -> str:
    return f"{commit[0]}@{commit[1]:.6f}"


def without_spark(instance: Any, lake: Any, name: str, check: str, expectation: Expectation,
                  dead_letters: str | None = None) -> Outcome | None:
    """The check's outcome when it can be told without reading the table, else None.

    Freshness is the age of its newest commit file. Every other check is a
    function of the tables' versions: when they are those its last completed evaluation
    recorded, that evaluation's verdict stands, and is reported again saying so. The
    dead-letter ratio is also told by the row counts the two tables' materializations
    recorded, when both describe the tables as they stand.
    """
    if check == FRESHNESS:
        assert isinstance(expectation, FreshnessExpectation)
        commit = commit_of(lake.table_path(name), lake.files)
        return None if commit is None else freshness_outcome(*commit,
                                                             expectation.max_age_minutes)
    commits = commits_read(lake, name, check, dead_letters)
    if None in commits.values():
        return None
    versions = {n: _stamp(c) for n, c in commits.items() if c is not None}
    reused = last_verdict(instance, name, check, versions)
    if reused is not None or check != DEAD_LETTER_RATIO:
        return reused
    assert isinstance(expectation, DeadLetterExpectation)
    assert dead_letters is not None
    rows = {n: recorded_rows(instance, n, c) for n, c in commits.items() if c is not None}
    if None in rows.values():
        return None
    outcome = check_dead_letter_ratio(rows[name], rows[dead_letters],
                                      expectation.max_ratio)
    outcome.metadata["counted_from"] = "the row counts of the tables' materializations"
    outcome.metadata[VERSIONS_KEY] = MetadataValue.json(versions)
    return outcome


def last_verdict(instance: Any, name: str, check: str, versions: dict[str, str]
                 ) -> Outcome | None:
    """The check's last completed verdict, when it was reached at these very versions."""
    records = instance.event_log_storage.get_asset_check_execution_history(
        AssetCheckKey(asset_key(name), check), limit=1,
        status={AssetCheckExecutionRecordStatus.SUCCEEDED,
                AssetCheckExecutionRecordStatus.FAILED})
    evaluation = records[0].evaluation if records else None
    if evaluation is None:
        return None
    recorded = evaluation.metadata.get(VERSIONS_KEY)
    if recorded is None or recorded.value != versions:
        return None
    metadata = dict(evaluation.metadata)
    metadata["reused_from_run"] = metadata.get("reused_from_run") or records[0].run_id
    description = (evaluation.description or "").removesuffix(REUSED)
    return Outcome(evaluation.passed, description + REUSED, metadata)


def recorded_rows(instance: Any, name: str, commit: tuple[int, float]) -> int | None:
    """The table's row count as its last materialization recorded it, if that was taken at
    the table's newest commit (`table_state` records the commit's time as Delta's history
    gives it: the commit file's, to the millisecond)."""
    recorded = recorded_state(instance, name)
    if recorded is None or recorded[0] != commit[0] or abs(recorded[2] - commit[1]) >= 0.001:
        return None
    return recorded[1]
