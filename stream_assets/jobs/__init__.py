"""Continuous mode: one job keeps the declared queries running until its run is terminated.

Launch `continuous_streams` from the UI (Jobs -> continuous_streams -> Launchpad), optionally
with a selection of tables. Its one op starts every query in one SparkSession with
processing-time triggers (`runner.start(..., available_now=False)`), holding each table's
lock, and reports each query to Dagster every few seconds (monitoring/tracker.py and
report_events.py). Through Spark Connect each query starts in a session of its own
(QuerySessions). Terminating the run
stops every query between two batches; the checkpoints make the next start resume exactly
where this one stopped. A query that fails is restarted with a growing back-off and reported
as failed until a batch succeeds again (the health sensor turns that into one alert). The op
holds each query's concurrency pool slot for as long as it runs (tables/pools.py).

The package: config.py (the run configuration), sessions.py (a query's Spark session),
streams.py (a query's state in the run), supervisor.py (the queries' life), reports.py (what
is measured and reported of them, as Dagster events built as a catch-up run's are:
monitoring/asset_events.py), run.py (the op and the job). Beside it,
the re-drive job (`redrive_dead_letters`): redrive.py (its config, op and job) and
redrive_report.py (what it tells Dagster); and maintenance.py, `maintain_tables`: compaction
and VACUUM on a schedule.
"""

from stream_assets.errors import short_error
from stream_assets.jobs.config import ContinuousConfig, check_trigger_names
from stream_assets.jobs.maintenance import build_maintenance_job, build_maintenance_schedule
from stream_assets.jobs.redrive import RedriveConfig, build_redrive_job
from stream_assets.jobs.reports import DerivedChecks
from stream_assets.jobs.run import JOB_NAME, build_continuous_job, resource_keys_of
from stream_assets.jobs.sessions import QuerySessions
from stream_assets.jobs.supervisor import Supervisor

__all__ = [
    "JOB_NAME",
    "ContinuousConfig",
    "DerivedChecks",
    "QuerySessions",
    "RedriveConfig",
    "Supervisor",
    "build_continuous_job",
    "build_maintenance_job",
    "build_maintenance_schedule",
    "build_redrive_job",
    "check_trigger_names",
    "resource_keys_of",
    "short_error",
]
