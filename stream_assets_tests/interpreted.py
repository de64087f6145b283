"""Test JVMs evaluate expressions interpreted instead of compiling them (docs/testing.md).

The tests feed Spark a few hundred rows per batch, and CPU is what the suite runs short of on
two cores: generating and compiling Java for every projection, per task, cost more than the
rows it then processes (JFR over a continuous run: code generation and Janino were a third of
the executor threads' samples). Interpreted evaluation is the same Spark, its other supported
path (Spark's own tests run both); it cut the CPU of test_ops_continuous by 19 %.

What users run, compiled code, is still tested end to end: test_streaming_tables runs every
table against the reference with Spark's defaults (`compiled`), and so do the Spark Connect
server and the standalone cluster, which take their own configuration.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from pyspark.sql import SparkSession

INTERPRETED = {"spark.sql.codegen.wholeStage": "false",
               "spark.sql.codegen.factoryMode": "NO_CODEGEN"}
SPARK_DEFAULTS = {"spark.sql.codegen.wholeStage": "true",
                  "spark.sql.codegen.factoryMode": "FALLBACK"}


def submit_args() -> str:
    """PYSPARK_SUBMIT_ARGS giving every JVM pyspark starts (here and in child processes:
    fault drivers, `dagster dev`'s runs) interpreted evaluation."""
    return " ".join(f"--conf {key}={value}" for key, value in INTERPRETED.items()) + \
        " pyspark-shell"


@contextmanager
def compiled(spark: SparkSession) -> Iterator[None]:
    """Spark's default, compiled evaluation for the queries started inside (a query keeps the
    settings it started with)."""
    before = {key: spark.conf.get(key, None) for key in SPARK_DEFAULTS}
    for key, value in SPARK_DEFAULTS.items():
        spark.conf.set(key, value)
    try:
        yield
    finally:
        for key, value in before.items():
            if value is None:
                spark.conf.unset(key)
            else:
                spark.conf.set(key, value)
