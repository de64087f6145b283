"""The project's own Spark functions (jvm/udf), registered in a session by name."""

from __future__ import annotations

from pyspark.sql import SparkSession
from pyspark.sql.types import DataType

from stream_assets.errors import MissingJars
from stream_assets.spark_types import ddl


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
