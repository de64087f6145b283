"""What a query's start tidied in its checkpoint (checkpoint_guard.py) and grew in its table
(schema_evolution.py): the metadata a run reports, and the lines its log says, the same for a
catch-up run and the continuous job."""

from dataclasses import dataclass, field
from typing import Any

# What a run's log says at info level: routine tidying of a committed checkpoint.
QUIET_CLEANUP = frozenset({"checkpoint_leftovers", "checkpoint_temp_files_removed"})


@dataclass
class Cleanup:
    """What the guard removed from a checkpoint, and the leftovers it kept (relative paths)."""

    removed: list[str] = field(default_factory=list)
    kept: list[str] = field(default_factory=list)
    # Files of a checkpoint that never planned a batch that no crash leaves there.
    unrecognized: list[str] = field(default_factory=list)
    started_over: bool = False
    # Temporary files of a checkpoint with committed batches that no batch can use any more
    # (removed: `stale_temps`).
    stale: list[str] = field(default_factory=list)
    # Not the checkpoint's, but reported with it: the columns the start added to the table
    # because its declared schema grew (schema_evolution.py).
    columns_added: list[str] = field(default_factory=list)

    def metadata(self) -> dict[str, str]:
        """For a run's metadata: only what happened, nothing when the checkpoint was clean."""
        meta = {}
        if self.removed:
            why = ("no batch was ever planned, so the query starts as new"
                   if self.started_over else "no batch was committed")
            meta["checkpoint_cleaned"] = (
                f"removed what an interrupted run left ({why}): {', '.join(self.removed)}"
            )
        if self.stale:
            meta["checkpoint_temp_files_removed"] = (
                "temporary files of interrupted writes that no batch can use any more (their "
                f"batch is committed, or their file was written since): {', '.join(self.stale)}"
            )
        if self.kept:
            meta["checkpoint_leftovers"] = (
                "temporary files of an interrupted write of a batch not committed yet, kept "
                f"until it is (Spark never reads them): {', '.join(self.kept)}"
            )
        if self.columns_added:
            meta["schema_evolved"] = (
                f"the declared schema grew: added {', '.join(self.columns_added)} to the table "
                "(rows written before read null there)"
            )
        if self.unrecognized:
            meta["checkpoint_unrecognized"] = (
                "files no interrupted run leaves before its first batch, left alone (the "
                f"query does not start as new): {', '.join(self.unrecognized)}"
            )
        return meta

    def say(self, log: Any, table: str) -> None:
        """Each item of `metadata` as a line of the run's log: routine tidying of a committed
        checkpoint (QUIET_CLEANUP) at info level, the rest as warnings."""
        for key, text in self.metadata().items():
            (log.info if key in QUIET_CLEANUP else log.warning)(f"{table}: {key}: {text}")
