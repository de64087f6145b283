"""Starting, watching, restarting, probing and stopping one continuous run's queries (plain
code: the op in run.py drives it); reports.py measures and reports them."""

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from typing import Any

from dagster import AssetCheckEvaluation
from pyspark.sql import SparkSession

from stream_assets.errors import (
    CheckpointMismatch,
    ExpectationFailed,
    KafkaDataLoss,
    StreamAssetsError,
    StreamFailed,
    TableBusy,
    short_error,
)
from stream_assets.jobs.config import ContinuousConfig
from stream_assets.jobs.reports import CONTINUOUS, DerivedChecks, Event, StreamReports
from stream_assets.jobs.streams import Stream
from stream_assets.monitoring.delta_writes import DeltaWrites
from stream_assets.monitoring.listener import IDLE, PROGRESS, STARTED, TERMINATED, QueryEvent
from stream_assets.monitoring.stream_report import Status
from stream_assets.monitoring.tracker import StreamTracker
from stream_assets.sinks import is_delta_table
from stream_assets.tables.cleanup import Cleanup
from stream_assets.tables.declaration import StreamingTable
from stream_assets.tables.expectations import stopped_by
from stream_assets.tables.query_errors import query_error
from stream_assets.tables.runner import StreamContext, start


class Supervisor:
    """Starts, watches, restarts and stops one run's queries; `reports` gives their events."""

    def __init__(
        self,
        tables: Sequence[StreamingTable],
        ctx: StreamContext,
        config: ContinuousConfig,
        log: Any,
        clock: Callable[[], float] = time.time,
        session_for: Callable[[str], SparkSession] | None = None,
        checks: Mapping[str, DerivedChecks] | None = None,
        health: Callable[[str], AssetCheckEvaluation] | None = None,
    ) -> None:
        self.ctx = ctx
        self.reporting = StreamReports(ctx, config, log, clock, checks, health)
        self.config = config
        self.log = log
        self.clock = clock
        # The session a query starts in (QuerySessions.for_query); default: ctx.spark.
        self.session_for = session_for or (lambda name: ctx.spark)
        now = clock()
        self.streams = [Stream(t, StreamTracker(t.name, now)) for t in tables]
        self.fatal: BaseException | None = None
        self.probed_at = float("-inf")

    # -- starting ------------------------------------------------------------------------
    def _missing_inputs(self, table: StreamingTable) -> list[str]:
        names = [*table.upstream_tables, *table.static]
        return [
            n for n in names
            if not is_delta_table(self.ctx.spark, self.ctx.lake.table_path(n))
        ]

    def start_due(self) -> None:
        for stream in self.streams:
            if stream.query is not None or stream.stopping or self.clock() < stream.retry_at:
                continue
            missing = self._missing_inputs(stream.table)
            if missing:
                if stream.tracker.status != Status.WAITING:
                    self.log.info(
                        f"{stream.table.name} waits for {', '.join(missing)} to exist "
                        "(its query starts once the upstream query has written a batch)"
                    )
                stream.tracker.on_waiting(f"waiting for {', '.join(missing)} to exist")
                stream.retry_at = self.clock() + 5
                continue
            self._start(stream)

    def _start(self, stream: Stream) -> None:
        table = stream.table
        cleanup = Cleanup()
        try:
            query = start(
                table, replace(self.ctx, spark=self.session_for(table.name)),
                available_now=False, trigger_interval=self.config.trigger_for(table),
                cleanup=cleanup,
            )
        except (CheckpointMismatch, TableBusy) as exc:
            self.fatal = exc
            return
        except StreamAssetsError as exc:
            if not stream.ever_started:
                self.fatal = exc  # a first start that fails is a setup problem: say it now
                return
            self._failed(stream, str(exc))
            return
        if stream.writes is None:
            stream.writes = DeltaWrites(self.ctx.spark, self.ctx.table_paths(table),
                                        files=self.ctx.lake.files)
        stream.query = query
        stream.run_id = str(query.runId)
        stream.ever_started = True
        stream.inactive_since = None
        stream.tracker.on_started(self.clock())
        # Leftovers kept in a committed checkpoint stay there: said quietly, every start.
        cleanup.say(self.log, table.name)
        self.log.info(f"{table.name}: query started "
                      f"(trigger every {self.config.trigger_for(table)})")

    # -- watching ------------------------------------------------------------------------
    def _stream_of(self, event: QueryEvent) -> Stream | None:
        for stream in self.streams:
            if stream.run_id == event.run_id:
                return stream
        return None

    def handle(self, events: Sequence[QueryEvent]) -> None:
        for event in events:
            stream = self._stream_of(event)
            if stream is None:
                continue  # another session's query, or a run of ours already handled
            if event.kind == STARTED:
                stream.tracker.on_started(event.at)
            elif event.kind == PROGRESS and event.progress is not None:
                if stream.tracker.failures:
                    self.log.info(f"{stream.table.name}: recovered, batch "
                                  f"{event.progress.get('batchId')} succeeded")
                stream.tracker.on_progress(event.progress, event.at)
                stream.backoff_s = 0.0
            elif event.kind == IDLE:
                stream.tracker.on_idle(event.at)
            elif event.kind == TERMINATED:
                self._terminated(stream, event.error)

    def probe_sources(self) -> None:
        """Every `source_probe_interval_s`, ask each Kafka cluster the started queries read
        whether it answers and holds their topics, once per cluster and topics. Spark's Kafka
        client waits minutes for a broker that is away before it fails the query; meanwhile
        the query only looks quiet. The probe makes it a report at once (StreamReport's
        `source_unreachable`), which the health sensor turns into one alert."""
        interval = self.config.source_probe_interval_s
        now = self.clock()
        if not interval or now - self.probed_at < interval:
            return
        self.probed_at = now
        answers: dict[tuple[int, tuple[str, ...]], str | None] = {}
        for stream in self.streams:
            if not stream.ever_started or stream.stopping or not stream.table.kafka_topics:
                continue
            errors = []
            for kafka, topics in self.ctx.kafka_topics(stream.table):
                key = (id(kafka), topics)
                if key not in answers:
                    answers[key] = _unreachable(kafka, topics, timeout_s=min(5.0, interval))
                if answers[key]:
                    errors.append(answers[key])
            stream.tracker.on_source("; ".join(errors) or None, self.clock())

    def poll(self) -> None:
        """Safety net for a termination the listener did not report."""
        now = self.clock()
        for stream in self.streams:
            query = stream.query
            if query is None or stream.stopping:
                continue
            if query.isActive:
                stream.inactive_since = None
                continue
            stream.inactive_since = stream.inactive_since or now
            if now - stream.inactive_since >= 5:
                error = query.exception()
                self._terminated(stream, str(error) if error is not None else None)

    def _terminated(self, stream: Stream, error: str | None) -> None:
        stream.query = None
        stream.run_id = None
        if stream.stopping:
            stream.tracker.on_stopped(self.clock())
            return
        if error:
            # A damaged checkpoint or lost Kafka data fails again on every restart: stop the
            # run at once with what to do, rather than after max_consecutive_failures tries.
            verdict = query_error(stream.table, self.ctx, RuntimeError(error), "failed")
            if isinstance(verdict, ExpectationFailed):
                # The batch is replayed and fails again until the data or the rule changes.
                stream.extra["failed_checks"] = CONTINUOUS.expectations(
                    stream.table.name, stopped_by(str(verdict), stream.table.expectations))
            if isinstance(verdict, (CheckpointMismatch, KafkaDataLoss, ExpectationFailed)):
                stream.tracker.on_failed(str(verdict), self.clock())
                self.log.error(str(verdict))
                self.fatal = verdict
                return
        self._failed(stream, short_error(error) if error else
                     "the query stopped without an error, but nobody asked it to")

    def _failed(self, stream: Stream, error: str) -> None:
        tracker = stream.tracker
        tracker.on_failed(error, self.clock())
        name = stream.table.name
        limit = self.config.max_consecutive_failures
        if not self.config.restart_on_failure or (limit and tracker.failures >= limit):
            self.log.error(f"{name} failed ({tracker.failures} time(s) in a row): {error}")
            self.fatal = StreamFailed(
                f"{name} failed {tracker.failures} time(s) in a row, last: {error}"
            )
            return
        stream.backoff_s = min(
            self.config.max_restart_backoff_s,
            max(self.config.restart_backoff_s, stream.backoff_s * 2),
        )
        stream.retry_at = self.clock() + stream.backoff_s
        self.log.warning(
            f"{name} failed (attempt {tracker.failures}); restarting in "
            f"{stream.backoff_s:g} s from its checkpoint: {error}"
        )

    # -- reporting -----------------------------------------------------------------------
    def reports(self, force: bool = False) -> list[Event]:
        """The Dagster events of every query whose report is due (of all when `force`)."""
        return self.reporting.events(self.streams, force)

    # -- stopping ------------------------------------------------------------------------
    def stop_all(self, timeout_s: float) -> None:
        """Stop every query between two batches (or after `timeout_s`, rolling one back)."""
        deadline = self.clock() + timeout_s
        pending = [s for s in self.streams if s.query is not None]
        for stream in self.streams:
            stream.stopping = True
        while pending:
            for stream in list(pending):
                query = stream.query
                assert query is not None
                try:
                    busy = query.isActive and bool(query.status.get("isTriggerActive"))
                except Exception:
                    busy = False
                if busy and self.clock() < deadline:
                    continue
                try:
                    query.stop()
                except Exception as exc:
                    self.log.warning(
                        f"{stream.table.name}: stopping raised {short_error(str(exc))}"
                    )
                stream.query = None
                stream.run_id = None
                stream.tracker.on_stopped(self.clock())
                pending.remove(stream)
                self.log.info(f"{stream.table.name}: query stopped")
            if pending:
                time.sleep(0.1)


def _unreachable(kafka: Any, topics: tuple[str, ...], timeout_s: float) -> str | None:
    """Why the cluster cannot serve these topics now, None when it can."""
    try:
        kafka.check_reachable(topics, timeout_s=timeout_s)
    except StreamAssetsError as exc:  # says where and what to check, never a secret
        return str(exc)
    except Exception as exc:
        return f"the Kafka probe failed: {short_error(str(exc), 300)}"
    return None
