"""The project's own Spark functions (jvm/udf), registered in a session by name."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from pyspark.sql import Column, SparkSession
from pyspark.sql import functions as F
from pyspark.sql.types import DataType

from stream_assets.errors import MissingJars
from stream_assets.spark_types import ddl

INSTANT_FUNCTION = "stream_assets_instant_of_micros"
INSTANT_CLASS = "io.github.streamassets.udf.InstantOfMicros"
# Instants travel as microseconds since the epoch. Also the `coalesce` fallback that makes the
# column not null: never returned, the function reads back what it is given.
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def register_function(spark: SparkSession, name: str, java_class: str, returns: str | DataType,
                      what: str) -> None:
    """Register one of the project's JVM functions (jvm/udf) in this session under `name`.

    A DataType `returns` reaches Spark as DDL (spark_types.py): over Spark Connect the object
    would make every string the function returns an explicitly collated one, and so every
    string column of the table it feeds."""
    from pyspark.errors import AnalysisException

    try:
        spark.udf.registerJavaFunction(
            name, java_class, returns if isinstance(returns, str) else ddl(returns))
    except AnalysisException as exc:
        raise MissingJars(
            f"Spark cannot load {what} ({java_class}): its jar is not on this "
            "session's classpath. Run 'stream-assets setup' (or 'make setup') to build it; the "
            "project's SparkResource puts it in spark.jars, or uploads it to a Spark Connect "
            "session. A session built otherwise needs that jar (the 'udf' folder of the jars) "
            "in its spark.jars, or added with addArtifacts over Spark Connect."
        ) from exc


def instant(spark: SparkSession, moment: datetime) -> Column:
    """A timestamp column of one instant (`moment`, timezone-aware) that leaves the query's
    generated code the same when the instant changes.

    Spark writes a timestamp literal into the Java code it generates, so a write stamped with
    its batch's time compiled its code anew for every batch (two classes; 0.2-0.4 CPU s per
    200,000 rows in bench/parse_cost.py). The instant goes in as text, which Spark hands to the
    code by reference, and jvm/udf's InstantOfMicros reads it back. Not null, like a literal.

    Only for a batch plan (foreachBatch, a batch query): in a streaming query's own plan Spark
    puts current_timestamp()'s literal in after optimizing, inside whatever wraps it."""
    register_function(spark, INSTANT_FUNCTION, INSTANT_CLASS, "timestamp",
                      "the instant function")
    micros = (moment - _EPOCH) // timedelta(microseconds=1)
    return F.coalesce(F.call_function(INSTANT_FUNCTION, F.lit(str(micros))), F.lit(_EPOCH))
