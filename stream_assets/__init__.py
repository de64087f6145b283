"""Real-time Delta Lake tables fed by Spark Structured Streaming, as Dagster assets."""

__version__ = "0.1.0"
