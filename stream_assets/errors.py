"""Errors that tell the user what to fix. None of them may carry a secret."""


class StreamAssetsError(Exception):
    """Base class: a problem the user can act on, described in plain words."""


class MissingJars(StreamAssetsError):
    """The JVM jars were never resolved into the local jar folder."""


class KafkaUnavailable(StreamAssetsError):
    """No Kafka broker answered at the configured address."""


class KafkaAuthenticationFailed(KafkaUnavailable):
    """The broker answered but refused the credentials (SASL authentication failed)."""


class InvalidConnectionString(StreamAssetsError):
    """An Event Hubs connection string is malformed (the message never contains the key)."""


class CheckpointMismatch(StreamAssetsError):
    """A checkpoint is missing, truncated or belongs to another query than its table."""


class TableBusy(StreamAssetsError):
    """Another run is already writing this table."""


class StreamFailed(StreamAssetsError):
    """A streaming query stopped with an error."""


class KafkaDataLoss(StreamFailed):
    """Kafka no longer holds records the checkpoint has not read (fail_on_data_loss stopped it)."""


class DeclarationError(StreamAssetsError):
    """A table declaration that cannot work; the message names the table and the field."""


class SchemaChangeRefused(StreamAssetsError):
    """A declared schema changed in a way the rows already in its table cannot follow."""


class ExpectationFailed(StreamFailed):
    """A row violated a `fail` expectation: the batch was not written."""


class LakeUnreachable(StreamAssetsError):
    """The lake's storage (a local disk or object store) did not answer or refused access."""


def short_error(text: str | None, limit: int = 1500) -> str:
    """What happened, without the stack traces: the root cause first, then the first line.

    A failed query's first line is usually a wrapper (py4j's "An exception was raised by the
    Python Proxy", Spark's "Query terminated with exception"); what a user can act on is the
    last `Caused by`, so an alert's text starts with it."""
    lines = [line.strip() for line in (text or "").splitlines() if line.strip()]
    if not lines:
        return "the query stopped with an error"
    causes = [line for line in lines if line.startswith("Caused by: ")]
    first = lines[0][:600]
    if not causes:
        return first[:limit]
    cause = causes[-1].removeprefix("Caused by: ")[:800]
    return f"{cause} (raised as: {first})"[:limit]
