"""What a failed streaming query means for the user: Spark's error as one that says what
happened and what to do (reset a checkpoint, skip lost Kafka data, wait for the lake)."""

from __future__ import annotations

import re

from stream_assets import paths
from stream_assets.errors import (
    CheckpointMismatch,
    ExpectationFailed,
    KafkaDataLoss,
    LakeUnreachable,
    StreamAssetsError,
    StreamFailed,
)
from stream_assets.tables.checkpoint_guard import reset_hint
from stream_assets.tables.context import StreamContext
from stream_assets.tables.declaration import StreamingTable

# Signs that Spark failed to *parse* the checkpoint's files (not to write them: a full disk is
# no reason to rebuild a table). Class names without packages, which move between versions.
_UNREADABLE_CHECKPOINT = (
    "Incomplete log file",
    "Log file was malformed",
    "OffsetSeqLog.deserialize",
    "CommitLog.deserialize",
    "StreamMetadata$.read",
    "InitialOffsetWriter.deserialize",
)
# A checkpoint of a newer Spark is readable by that Spark: Spark's own message says so.
_NEWER_LOG_VERSION = ("INVALID_LOG_VERSION", "UnsupportedLogVersion")
# Spark's error classes for a checkpoint it will not resume from as it stands: leftovers in a
# new query's folders (SPARK-53103), missing or unreadable state, state or operators that no
# longer match the query. Each fails again on every start until the checkpoint is reset. Not
# here: failures to write state (CANNOT_WRITE_STATE_STORE) and memory or thread errors while
# loading it, which a retry can fix.
_UNUSABLE_CHECKPOINT = re.compile(r"\b(" + "|".join((
    "STATE_STORE_CHECKPOINT_LOCATION_NOT_EMPTY",
    r"STATE_STORE_\w*(SCHEMA|CONFIG|VARIABLE_TYPE)\w*",
    r"STATE_STORE_\w*ROW_FORMAT_VALIDATION_FAILURE",
    "STATE_STORE_ROW_CHECKSUM_VERIFICATION_FAILED",
    "STATE_STORE_BASE_CHECKPOINT_ID_MISMATCH",
    "CHECKPOINT_FILE_CHECKSUM_VERIFICATION_FAILED",
    r"STREAMING_CHECKPOINT_\w+",
    r"STREAMING_STATEFUL_OPERATOR_\w+",
    r"CANNOT_LOAD_STATE_STORE(?!\.\w*(OUT_OF_MEMORY|UNRELEASED_THREAD))",
    # Delta's: the upstream table a Delta stream reads was deleted and rebuilt since the
    # checkpoint (its table id changed); a full refresh of that upstream resets this query too.
    r"\w*DIFFERENT_DELTA_TABLE_READ_BY_STREAMING_SOURCE",
)) + r")\b")
_DATA_LOSS = "data may have been lost"


def query_error(
    table: StreamingTable, ctx: StreamContext, exc: BaseException, doing: str
) -> StreamAssetsError:
    """A failed query as an error that says what happened and what the user can do."""
    summary = _short(exc)
    # pyspark keeps the JVM stack trace out of str() of captured exceptions.
    details = f"{exc}\n{getattr(exc, '_stackTrace', '') or ''}"
    if any(sign in details for sign in _UNREADABLE_CHECKPOINT) and not any(
        sign in details for sign in _NEWER_LOG_VERSION
    ):
        return CheckpointMismatch(
            f"the checkpoint of {table.name} at {ctx.lake.checkpoint_path(table.name)} is "
            f"damaged: Spark cannot read it ({summary}); {reset_hint(table.name)}"
        )
    if ExpectationFailed.__name__ in details:
        # Raised by our own foreachBatch (stream_assets/tables/writes.py): its message says
        # what failed and what to do; Spark's wrapping adds nothing.
        own = summary.split(f"{ExpectationFailed.__name__}: ", 1)[-1]
        return ExpectationFailed(own if own.startswith(table.name) else summary)
    unusable = _UNUSABLE_CHECKPOINT.search(details)
    if unusable:
        return CheckpointMismatch(
            f"{table.name} {doing}: Spark will not resume from the checkpoint of {table.name} "
            f"at {ctx.lake.checkpoint_path(table.name)} as it stands ({unusable.group(1)}), "
            f"and it would fail the same way on every run; {reset_hint(table.name)}. "
            f"Spark said: {summary}"
        )
    if (paths.local_path(ctx.lake.checkpoint_path(table.name)) is None
            and any(sign in details for sign in _STORE_CLIENT)
            and any(sign in details for sign in _STORE_UNREACHABLE)):
        return LakeUnreachable(
            f"{table.name} {doing}: the lake's storage did not answer "
            f"({ctx.lake.s3.endpoint or ctx.lake.tables_root}). Nothing committed is lost: "
            "once it answers again, the next run resumes from the last committed batch and "
            f"writes every record once. Spark said: {summary}"
        )
    if _DATA_LOSS in summary.lower():
        return KafkaDataLoss(
            f"{table.name} {doing}: data may have been lost: Kafka no longer holds records the "
            "checkpoint has not read yet (retention deleted them, or the topic was deleted or "
            f"recreated). {table.name} stopped rather than skip them. To go on, either skip "
            "them for one run with fail_on_data_loss: false on the stream source (what is "
            "gone stays gone, everything else lands once), or rebuild from what Kafka holds "
            f"now: {reset_hint(table.name)}. Spark said: {summary}"
        )
    return StreamFailed(f"{table.name} {doing}: {summary}")


# What the JVM's store clients (S3A, ABFS, GCS) say when the object store does not answer;
# both a client and a connection sign, so an unreachable broker is not blamed on the lake.
_STORE_CLIENT = ("org.apache.hadoop.fs.s3a", "software.amazon.awssdk",
                 "org.apache.hadoop.fs.azurebfs", "com.google.cloud.hadoop")
_STORE_UNREACHABLE = ("java.net.ConnectException", "Connection refused",
                      "java.net.UnknownHostException", "Unable to execute HTTP request",
                      "java.net.SocketTimeoutException")


# py4j's wrapper around a Java exception: "Py4JJavaError: An error occurred while calling
# o730.save.\n: org.apache...Exception: message".
_PY4J_CALL = re.compile(r"(?:py4j\.protocol\.)?(?:Py4JJavaError: )?An error occurred while "
                        r"calling \S+\n: ")


def _short(exc: BaseException, limit: int = 1500) -> str:
    """Spark's message without the query's plan, Java frames or a foreachBatch traceback."""
    text = str(exc).strip()
    text = text.split("\n=== Streaming Query ===")[0].split("\nJVM stacktrace:")[0]
    head, traceback, frames = text.partition("Traceback (most recent call last):")
    if traceback:
        # An error inside foreachBatch reaches us as the Python traceback of the batch
        # function; what matters is the exception that ended it, usually a Java one.
        last_frame = frames.rfind('\n  File "')
        lines = frames[last_frame + 1:].split("\n")
        raised = next((i for i, line in enumerate(lines) if line and not line[0].isspace()),
                      len(lines))
        text = head.rstrip() + " " + "\n".join(lines[raised:])
    text = _PY4J_CALL.sub("", text).split("\n\tat ")[0]
    return text.strip()[:limit]
