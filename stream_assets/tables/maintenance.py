"""What keeps a streaming table in shape over months, declared with it: `Maintenance`.

A streaming table gains small files with every micro-batch (raw_events: about 20 per batch)
and log entries with every commit. The `maintain_tables` job (jobs/maintenance.py) compacts
each table, deletes the files no version it keeps reads any more, and reports the figures; the
declaration says how (docs/operations.md, "Maintenance"). Pure: no Spark, no Dagster.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import timedelta

# Delta's own default for `delta.deletedFileRetentionDuration`: how long a file a commit
# removed stays on storage for the readers and time travel that still need it.
DEFAULT_VACUUM_RETENTION = timedelta(days=7)
LOG_RETENTION_PROPERTY = "delta.logRetentionDuration"
RETENTION_PROPERTY = "delta.deletedFileRetentionDuration"
# Delta's interval strings: "30 days", "interval 12 hours".
_INTERVAL = re.compile(r"(interval\s+)?(\d+)\s+(week|day|hour|minute|second)s?", re.IGNORECASE)


def parse_interval(text: str) -> timedelta | None:
    """A Delta interval string ("7 days", "interval 3600 seconds") as a timedelta."""
    match = _INTERVAL.fullmatch(text.strip())
    if match is None:
        return None
    return timedelta(**{f"{match.group(3).lower()}s": int(match.group(2))})


@dataclass(frozen=True)
class Maintenance:
    """How the `maintain_tables` job keeps one table (and its dead letters) healthy.

    `compact`: bin-packing `OPTIMIZE` at every run of the job; it rewrites small files into
    large ones in commits that change no data, so readers, the nothing-new check and the row
    counts see no new rows. `zorder_by` (columns, not partition columns) makes it
    `OPTIMIZE ... ZORDER BY`, which rewrites every file of the table each time: for tables
    read by range on those columns, at a cost. `vacuum`: `VACUUM` every `vacuum_every`,
    deleting files removed longer than `vacuum_retention` ago (the table's
    `delta.deletedFileRetentionDuration`; Delta's default, 7 days) and never a file a query
    streaming from the table has not read yet: while such a reader's checkpoint stands at a
    version older than the retention, VACUUM waits for it. Below 7 days time travel reaches
    back only as far. `log_retention` sets the table's
    `delta.logRetentionDuration` (e.g. "7 days"; None keeps Delta's 30 days): how long Delta
    keeps commit files, which it cleans itself at its checkpoints. The writer sets both
    properties at its next start (one commit), so no commit of the job races the writer's.
    """

    compact: bool = True
    zorder_by: tuple[str, ...] = ()
    vacuum: bool = True
    vacuum_retention: timedelta = DEFAULT_VACUUM_RETENTION
    vacuum_every: timedelta = timedelta(days=1)
    log_retention: str | None = None

    def __post_init__(self) -> None:
        if isinstance(self.zorder_by, list):
            object.__setattr__(self, "zorder_by", tuple(self.zorder_by))

    def problems(self, columns: set[str] | None, partition_by: tuple[str, ...]) -> list[str]:
        """What cannot work, for the declaration's DeclarationError (empty when all is well).

        `columns`: the table's declared columns, None when only the query knows them."""
        found = []
        if isinstance(self.zorder_by, str) or not all(isinstance(c, str)
                                                      for c in self.zorder_by):
            found.append(f"zorder_by must be a tuple of column names, not {self.zorder_by!r}")
            return found
        partitioned = [c for c in self.zorder_by if c in partition_by]
        if partitioned:
            found.append(f"zorder_by: {', '.join(partitioned)} is a partition column, which "
                         "Z-ordering cannot use (files are already split by it)")
        if columns is not None:
            unknown = [c for c in self.zorder_by if c not in columns]
            if unknown:
                found.append(f"zorder_by: {', '.join(unknown)} not in the schema")
        for name in ("vacuum_retention", "vacuum_every"):
            value = getattr(self, name)
            if not isinstance(value, timedelta) or value < timedelta(0):
                found.append(f"{name} must be a timedelta of 0 or more, not {value!r}")
        if self.log_retention is not None and (
                not isinstance(self.log_retention, str)
                or not _INTERVAL.fullmatch(self.log_retention.strip())):
            found.append(f"log_retention must be a Delta interval such as '7 days' or "
                         f"'interval 12 hours', not {self.log_retention!r}")
        return found

    @property
    def properties(self) -> dict[str, str]:
        """The Delta table properties this maintenance gives the table (none by default)."""
        properties = {}
        if self.log_retention is not None:
            properties[LOG_RETENTION_PROPERTY] = self.log_retention.strip()
        if self.vacuum_retention != DEFAULT_VACUUM_RETENTION:
            seconds = int(self.vacuum_retention.total_seconds())
            properties[RETENTION_PROPERTY] = f"interval {seconds} seconds"
        return properties


DEFAULT_MAINTENANCE = Maintenance()
