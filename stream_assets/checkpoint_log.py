"""A streaming checkpoint's own log, read without Spark: which batches were planned
(`offsets/N`) and committed (`commits/N`), and where the last committed one ended.

The "nothing new" test (tables/pending.py), the backlog and lag measures
(monitoring/measures.py) and the checkpoint guard read the same few files; they read them
here, through the lake's files (lake_files.py), on a local disk or object storage alike.
"""

from __future__ import annotations

from dataclasses import dataclass

from stream_assets.errors import LakeUnreachable
from stream_assets.lake_files import LakeFiles

NO_BATCH = "no batch committed yet"


@dataclass(frozen=True)
class CommittedBatch:
    """The source offsets a checkpoint's last committed batch ended at, one line per source."""

    batch_id: int
    source_lines: tuple[str, ...]
    # The newest batch planned (offsets/N); above batch_id when a run stopped inside a batch.
    newest_planned: int


def batch_ids(files: LakeFiles, folder: str) -> list[int]:
    """The batch ids of a Spark log folder (offsets/ or commits/), oldest first."""
    return sorted(int(n) for n in files.names(folder) or () if n.isdigit())


def last_committed_batch(checkpoint: str, files: LakeFiles) -> CommittedBatch | str:
    """The checkpoint's last committed batch, or why there is none to compare with."""
    if files.resolve(checkpoint) is None:
        return "the checkpoint's storage cannot be read without Spark"
    root = checkpoint.rstrip("/")
    try:
        commits = batch_ids(files, f"{root}/commits")
        planned = batch_ids(files, f"{root}/offsets")
    except LakeUnreachable as exc:
        return f"the checkpoint cannot be listed ({exc})"
    if not commits:
        return NO_BATCH
    try:
        lines = files.read_text(f"{root}/offsets/{commits[-1]}").splitlines()
    except (OSError, UnicodeDecodeError):
        return f"offsets/{commits[-1]} cannot be read"
    # "v1", the batch's metadata, then one line per source (Spark's OffsetSeqLog).
    return CommittedBatch(commits[-1], tuple(lines[2:]), max(planned, default=commits[-1]))
