"""Which query failures a catch-up run retries from its checkpoint (tables/server_faults.py)."""

from stream_assets.tables.server_faults import passing_fault


class _JvmError(Exception):
    """A pyspark error as Spark Connect raises it: the message, and the JVM's trace apart."""

    def __init__(self, message: str, trace: str) -> None:
        super().__init__(message)
        self._stackTrace = trace


def test_a_late_python_worker_is_a_passing_fault():
    fault = passing_fault(RuntimeError(
        "org.apache.spark.SparkException: Python worker failed to connect back."))
    assert fault is not None and "did not connect back in time" in fault.said


def test_a_session_jar_deleted_under_a_task_is_a_passing_fault_even_deep_in_the_trace():
    fault = passing_fault(_JvmError(
        "[STREAM_FAILED] Query [id = 1] terminated with exception: Job aborted",
        "Caused by: java.lang.RuntimeException: Stream "
        "'/artifacts/7a3e0ef9-485e-4c5c-b13b-67027607d12a/jars/stream-assets-udf.jar' was "
        "not found."))
    assert fault is not None and "jar" in fault.said


def test_other_failures_are_not_retried():
    assert passing_fault(RuntimeError("Stream '/jars/app.jar' was not found.")) is None
    assert passing_fault(RuntimeError("[DELTA_CONCURRENT_APPEND] files were added")) is None
