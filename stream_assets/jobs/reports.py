"""What a continuous run reports of its queries: each due report's figures (Kafka lag,
upstream versions waiting, rows each Delta commit wrote, the tables' state) measured, then
turned into Dagster events the way a catch-up run builds its own (monitoring/asset_events.py):
the report's materializations or observation, the expectations' verdicts, the carried
`stream_health` and, every `checks_interval_s`, the derived checks."""

import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol

from dagster import AssetCheckEvaluation, AssetMaterialization, AssetObservation
from pyspark.sql import SparkSession

from stream_assets.errors import short_error
from stream_assets.jobs.config import ContinuousConfig
from stream_assets.jobs.streams import Stream
from stream_assets.monitoring.asset_events import AssetEvents, CheckEvent
from stream_assets.monitoring.lag import processed_offsets
from stream_assets.monitoring.measures import checkpoint_offsets, measure_backlog, measure_lag
from stream_assets.monitoring.report_events import (
    expectation_outcomes,
    failing_text,
    lag_total,
    stream_events,
)
from stream_assets.monitoring.stream_report import Status
from stream_assets.tables.assets import properties_metadata
from stream_assets.tables.runner import StreamContext

Event = AssetMaterialization | AssetObservation | AssetCheckEvaluation
# The continuous job's op declares no assets: its events are materializations, observations
# and check evaluations, marked `mode: continuous`.
CONTINUOUS = AssetEvents(continuous=True)


class DerivedChecks(Protocol):
    """A query's derived checks as the run evaluates them (monitoring/checks.TableChecks;
    build_definitions supplies them, since this package sits beside monitoring.checks)."""

    def evaluations(self, spark: SparkSession, lake: Any) -> list[CheckEvent]: ...


class StreamReports:
    """Measures and reports the run's streams when their reports are due (Supervisor.reports)."""

    def __init__(
        self,
        ctx: StreamContext,
        config: ContinuousConfig,
        log: Any,
        clock: Callable[[], float] = time.time,
        checks: Mapping[str, DerivedChecks] | None = None,
        health: Callable[[str], AssetCheckEvaluation] | None = None,
    ) -> None:
        self.ctx = ctx
        self.config = config
        self.log = log
        self.clock = clock
        self.checks = dict(checks or {})
        # The stream_health verdict each report carries (alerts.carried_health).
        self.health = health

    def events(self, streams: Sequence[Stream], force: bool = False) -> list[Event]:
        """The events of every stream whose report is due (all of them when `force`)."""
        events: list[Event] = []
        now = self.clock()
        for stream in streams:
            tracker = stream.tracker
            if not (force or tracker.due(now, self.config.event_interval_s,
                                         self.config.heartbeat_interval_s)):
                continue
            lags = self._lag(stream)
            backlog = self._backlog(stream)
            written = self._written(stream)
            dead = None
            if stream.table.dead_letter_table is not None:
                dead = written.get(stream.table.dead_letter_table, 0)
            waiting = None if backlog is None else sum(backlog.values())
            # Judged over the batches this report covers, so the UI's checks stay live.
            outcomes = expectation_outcomes(stream.table.expectations, tracker.totals)
            report, totals = tracker.take(now, lag_total(lags), dead, waiting,
                                          failing_text(outcomes))
            reported = stream_events(stream.table.name, stream.table.tables, report, totals,
                                     written, lags, backlog, self._states(stream))
            events.extend(reported)
            events.extend(CONTINUOUS.expectations(stream.table.name, outcomes))
            if self.health is not None and _materializes(reported, stream.table.name):
                # The verdict is carried to keep it on the latest materialization (the UI
                # judges checks against that); a heartbeat's observation replaces none, so it
                # goes without one: half the events of an idle query (docs/operations.md).
                events.append(self.health(stream.table.name))
            events.extend(stream.extra.pop("failed_checks", []))
            if any(written.values()):
                stream.unchecked = True
            events.extend(self._derived_checks(stream, now, force))
        return events

    def _derived_checks(self, stream: Stream, now: float, force: bool) -> list[Event]:
        """The table's derived checks, when it wrote since they last ran and they are due."""
        checks = self.checks.get(stream.table.name)
        interval = self.config.checks_interval_s
        if checks is None or not interval or not stream.unchecked:
            return []
        if not force and now - stream.checked_at < interval:
            return []
        stream.unchecked, stream.checked_at = False, now
        try:
            return list(checks.evaluations(self.ctx.spark, self.ctx.lake))
        except Exception as exc:  # a check that cannot run must not stop the streams
            self._warn_once(stream, "checks", f"{stream.table.name}: derived checks not run: "
                            f"{short_error(str(exc))}")
            return []

    def _written(self, stream: Stream) -> dict[str, int]:
        if stream.writes is None:
            return {}
        try:
            return stream.writes.take()
        except Exception as exc:  # a report without row counts beats a stopped stream
            self._warn_once(stream, "delta", f"{stream.table.name}: could not read the Delta "
                            f"history for rows written: {short_error(str(exc))}")
            return {}

    def _states(self, stream: Stream) -> dict[str, dict[str, Any]]:
        if stream.writes is None:
            return {}
        try:
            # As a catch-up run's: the state after the commits, and the declared properties
            # the main table holds (which the next catch-up run compares: properties_check).
            return {name: {**stream.writes.state(name, stream.table.descriptions_of(name)),
                           **properties_metadata(stream.table, name)}
                    for name in stream.table.tables}
        except Exception as exc:  # like the rows written: a report without them still goes
            self._warn_once(stream, "state", f"{stream.table.name}: could not read the tables' "
                            f"version and row count: {short_error(str(exc))}")
            return {}

    def _warn_once(self, stream: Stream, what: str, message: str) -> None:
        if stream.extra.get(what) != message:
            stream.extra[what] = message
            self.log.warning(message)

    def _lag(self, stream: Stream):
        table = stream.table
        if not table.kafka_topics or stream.tracker.status == Status.WAITING:
            return None
        if stream.tracker.source_error:
            return None  # the probe found the broker away: asking it would only wait
        processed = processed_offsets(stream.tracker.latest_progress)
        if not processed:
            processed = checkpoint_offsets(self.ctx.lake.checkpoint_path(table.name),
                                           self.ctx.lake.files)
        try:
            return [lag for kafka, topics in self.ctx.kafka_topics(table)
                    for lag in measure_lag(kafka, topics, processed)]
        except Exception as exc:  # the broker being away must not stop the reporting
            self._warn_once(stream, "lag", f"{table.name}: Kafka lag not measured: "
                            f"{short_error(str(exc))}")
            return None

    def _backlog(self, stream: Stream) -> dict[str, int] | None:
        """Upstream Delta versions the query has not processed, per upstream table."""
        table = stream.table
        if not table.upstream_tables or stream.tracker.status == Status.WAITING:
            return None
        paths = {t: self.ctx.lake.table_path(t) for t in table.upstream_tables}
        try:
            backlog = measure_backlog(self.ctx.spark, paths, stream.tracker.latest_progress,
                                      self.ctx.lake.checkpoint_path(table.name),
                                      self.ctx.lake.files)
        except Exception as exc:  # like the Kafka lag: never worth stopping the reporting
            self._warn_once(stream, "backlog", f"{table.name}: upstream versions waiting not "
                            f"measured: {short_error(str(exc))}")
            return None
        return backlog or None


def _materializes(events: Sequence[Event], table: str) -> bool:
    return any(isinstance(e, AssetMaterialization) and e.asset_key.to_user_string() == table
               for e in events)
