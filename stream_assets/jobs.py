"""Continuous mode: one job keeps the declared queries running until its run is terminated.

Launch `continuous_streams` from the UI (Jobs -> continuous_streams -> Launchpad), optionally
with a selection of tables. Its one op starts every query in one SparkSession with
processing-time triggers (`runner.start(..., available_now=False)`), holding each table's
lock, and reports each query to Dagster every few seconds (listener.py). Through Spark
Connect each query starts in a session of its own (QuerySessions). Terminating the run
stops every query between two batches; the checkpoints make the next start resume exactly
where this one stopped. A query that fails is restarted with a growing back-off and reported
as failed until a batch succeeds again (the health sensor turns that into one alert). The op
holds each query's concurrency pool slot for as long as it runs (tables/pools.py).
"""

import signal
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import ExitStack, suppress
from dataclasses import dataclass, field, replace
from typing import Any, Protocol

import pyspark
from dagster import (
    AssetCheckEvaluation,
    AssetMaterialization,
    AssetObservation,
    Config,
    DagsterExecutionInterruptedError,
    DagsterRun,
    DagsterRunStatus,
    Failure,
    JobDefinition,
    OpExecutionContext,
    in_process_executor,
    job,
    op,
)
from pydantic import Field
from pyspark.sql import SparkSession
from pyspark.sql.streaming import StreamingQuery, StreamingQueryListener

from stream_assets.continuous_runs import CONTINUOUS, MODE_TAG, OP_NAME, select_tables
from stream_assets.errors import (
    CheckpointMismatch,
    ExpectationFailed,
    KafkaDataLoss,
    StreamAssetsError,
    StreamFailed,
    TableBusy,
)
from stream_assets.monitoring.health import Status
from stream_assets.monitoring.lag import processed_offsets
from stream_assets.monitoring.listener import (
    IDLE,
    PROGRESS,
    STARTED,
    TERMINATED,
    DeltaWrites,
    QueryEvent,
    QueryEventListener,
    StreamTracker,
    checkpoint_offsets,
    expectation_evaluations,
    expectation_outcomes,
    failing_text,
    lag_total,
    measure_backlog,
    measure_lag,
    stream_events,
)
from stream_assets.sinks import is_connect, is_delta_table
from stream_assets.tables.assets import resource_keys
from stream_assets.tables.checkpoint_guard import Cleanup
from stream_assets.tables.declaration import StreamingTable
from stream_assets.tables.expectations import stopped_by
from stream_assets.tables.pools import pool_slots
from stream_assets.tables.runner import StreamContext, exclusive, query_error, start
from stream_assets.tables.sources import DEFAULT_KAFKA_RESOURCE

JOB_NAME = "continuous_streams"


def resource_keys_of(catalog: Sequence[StreamingTable]) -> set[str]:
    """Every resource the tables' queries read through (Spark, the lake, Kafka clusters)."""
    return set().union({"spark", "lake"}, *(resource_keys(t) for t in catalog))

Event = AssetMaterialization | AssetObservation | AssetCheckEvaluation


class DerivedChecks(Protocol):
    """A query's derived checks as the run evaluates them (monitoring/checks.TableChecks;
    build_definitions supplies them, since this module sits beside monitoring.checks)."""

    def evaluations(self, spark: SparkSession, lake: Any) -> list[AssetCheckEvaluation]: ...


class ContinuousConfig(Config):
    tables: list[str] = Field(
        default_factory=list,
        description="Tables whose queries to run (a query's extra tables, like "
        "dead_letter_queue, select their query); empty: all of them.",
    )
    trigger_interval: str | None = Field(
        default=None,
        description="Processing-time trigger for every query, e.g. '10 seconds'; default: "
        "each declaration's trigger_interval.",
    )
    trigger_intervals: dict[str, str] = Field(
        default_factory=dict,
        description="Per-query processing-time triggers, e.g. {'raw_events': '0 seconds'}; "
        "they win over trigger_interval. A short trigger lowers latency and makes more, "
        "smaller Delta commits.",
    )
    event_interval_s: float = Field(
        default=10.0,
        description="At most one event per asset per this many seconds; batches in between "
        "are summed into it.",
    )
    heartbeat_interval_s: float = Field(
        default=60.0,
        description="An idle query still reports (with its Kafka lag) this often.",
    )
    restart_on_failure: bool = Field(
        default=True, description="Restart a failed query (with back-off) instead of failing "
        "the run.",
    )
    restart_backoff_s: float = Field(default=5.0, description="First restart delay; doubles.")
    max_restart_backoff_s: float = Field(default=120.0, description="Longest restart delay.")
    max_consecutive_failures: int = Field(
        default=20, description="Fail the run after this many failures without a good batch "
        "in between (0: never).",
    )
    stop_timeout_s: float = Field(
        default=60.0,
        description="On termination, how long to wait for a batch in flight before stopping "
        "anyway (a stopped batch is rolled back and replayed on the next start).",
    )
    poll_interval_s: float = Field(default=1.0, description="Supervision loop period.")
    source_probe_interval_s: float = Field(
        default=10.0,
        description="Ask every Kafka cluster the running queries read whether it answers this "
        "often (each look waits at most 5 s); an outage is reported at once and the health "
        "sensor alerts 'source unreachable' long before Spark gives up on the query. 0: never.",
    )
    checks_interval_s: float = Field(
        default=300.0,
        description="Run a table's derived checks (freshness, schema, keys, dead-letter "
        "ratio) at most this often, when its query wrote since they last ran, so the UI's "
        "check status stays current; 0: never (expectations are judged every report).",
    )
    max_runtime_s: float | None = Field(
        default=None,
        description="Stop every query gracefully after this many seconds and end the run "
        "successfully; default: run until terminated.",
    )

    def trigger_for(self, table: StreamingTable) -> str:
        return (self.trigger_intervals.get(table.name) or self.trigger_interval
                or table.trigger_interval)


def check_trigger_names(catalog: Sequence[StreamingTable], intervals: dict[str, str]) -> None:
    """A misspelt query name in trigger_intervals would silently keep the default trigger."""
    unknown = sorted(set(intervals) - {t.name for t in catalog})
    if unknown:
        raise Failure(
            description=f"trigger_intervals names unknown query(ies) {', '.join(unknown)}; "
            f"queries: {', '.join(t.name for t in catalog)}"
        )


def short_error(text: str | None, limit: int = 1500) -> str:
    """What happened, without the stack traces: the first line and the root cause."""
    lines = [line.strip() for line in (text or "").splitlines() if line.strip()]
    if not lines:
        return "the query stopped with an error"
    causes = [line for line in lines if line.startswith("Caused by: ")]
    summary = lines[0][:600]
    if causes:
        summary += " | " + causes[-1][:800]
    return summary[:limit]


@dataclass
class Stream:
    table: StreamingTable
    tracker: StreamTracker
    query: StreamingQuery | None = None
    run_id: str | None = None
    writes: DeltaWrites | None = None
    retry_at: float = 0.0
    backoff_s: float = 0.0
    ever_started: bool = False
    stopping: bool = False
    inactive_since: float | None = None
    unchecked: bool = False  # wrote since its derived checks last ran
    checked_at: float = float("-inf")
    extra: dict[str, Any] = field(default_factory=dict)


class QuerySessions:
    """The session each query of a run starts in, each one reporting to the run's listener.

    A MERGE sink takes its Delta transaction ids from session settings (sinks.merge_once).
    Classic Spark runs every query in a clone of the session that started it, so those
    settings stay the query's own. Through Spark Connect a query's foreachBatch runs in the
    very session it was started from: two queries sharing one could commit under each
    other's ids and lose replay protection. There each query starts in a server-side clone
    of the run's session (same settings), released when the run ends.
    """

    def __init__(self, spark: SparkSession, listener: StreamingQueryListener, log: Any) -> None:
        self.spark = spark
        self.listener = listener
        self.log = log
        self.own: dict[str, SparkSession] = {}
        self.listening: list[SparkSession] = []
        if not is_connect(spark):
            self._listen(spark)

    def for_query(self, name: str) -> SparkSession:
        if not is_connect(self.spark):
            return self.spark
        if name not in self.own:
            self.own[name] = self._clone(name)
            self._listen(self.own[name])
        return self.own[name]

    def _clone(self, name: str) -> SparkSession:
        try:
            return self.spark.cloneSession()
        except Exception as exc:
            self.log.warning(
                f"{name}: the Spark Connect server could not give the query a session of its "
                f"own ({short_error(str(exc), 300)}), so it shares the run's: two MERGE queries "
                "running at once could commit under each other's transaction ids. Use a server "
                f"of the client's Spark version ({pyspark.__version__}) or run them in "
                "separate runs."
            )
            return self.spark

    def _listen(self, session: SparkSession) -> None:
        if not any(s is session for s in self.listening):
            session.streams.addListener(self.listener)
            self.listening.append(session)

    def close(self) -> None:
        """Stop listening, and release the sessions made for queries (stopped by now)."""
        for session in self.listening:
            with suppress(Exception):
                session.streams.removeListener(self.listener)
        self.listening.clear()
        for session in self.own.values():
            if session is not self.spark:
                # Not session.stop(): in Connect's local mode that stops the server too.
                with suppress(Exception):
                    session.client.release_session()
                with suppress(Exception):
                    session.client.close()
        self.own.clear()


class Supervisor:
    """Starts, watches, restarts and stops one run's queries; produces their Dagster events."""

    def __init__(
        self,
        tables: Sequence[StreamingTable],
        ctx: StreamContext,
        config: ContinuousConfig,
        log: Any,
        clock: Callable[[], float] = time.time,
        session_for: Callable[[str], SparkSession] | None = None,
        checks: Mapping[str, DerivedChecks] | None = None,
    ) -> None:
        self.ctx = ctx
        self.checks = dict(checks or {})
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
            stream.writes = DeltaWrites(self.ctx.spark, self.ctx.table_paths(table))
        stream.query = query
        stream.run_id = str(query.runId)
        stream.ever_started = True
        stream.inactive_since = None
        stream.tracker.on_started(self.clock())
        for key, text in cleanup.metadata().items():
            # Leftovers kept in a committed checkpoint stay there: say so quietly, every run.
            log = self.log.info if key == "checkpoint_leftovers" else self.log.warning
            log(f"{table.name}: {key}: {text}")
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
                stream.extra["failed_checks"] = expectation_evaluations(
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
        events: list[Event] = []
        now = self.clock()
        for stream in self.streams:
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
            events.extend(stream_events(stream.table.name, stream.table.tables, report,
                                        totals, written, lags, backlog, self._states(stream)))
            events.extend(expectation_evaluations(stream.table.name, outcomes))
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
            return {name: stream.writes.state(name, stream.table.descriptions_of(name))
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


def _session_keeping_dagster_interrupts(resource: Any) -> Any:
    """The SparkSession, without PySpark's SIGINT handler, which would cancel running jobs.

    Dagster turns a terminate request into SIGINT; PySpark's handler (installed when the
    session starts on the main thread) would cancel the batch in flight instead of letting
    the op stop the queries between batches.
    """
    main = threading.current_thread() is threading.main_thread()
    handler = signal.getsignal(signal.SIGINT) if main else None
    session = resource.spark_session
    if main and handler is not None:
        signal.signal(signal.SIGINT, handler)
    return session


def _termination_requested(context: OpExecutionContext) -> bool:
    """The run was marked for termination but no interrupt reached this process.

    Dagster's run launchers deliver a terminate request as an interrupt; this covers
    launchers and in-process executions that cannot signal the op.
    """
    try:
        run = context.instance.get_run_by_id(context.run_id)
    except Exception:
        return False
    return run is not None and run.status == DagsterRunStatus.CANCELING


def _ignore_further_interrupts() -> None:
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGINT, lambda *_: None)


def run_continuously(
    context: OpExecutionContext, config: ContinuousConfig, catalog: Sequence[StreamingTable],
    checks: Mapping[str, DerivedChecks] | None = None,
) -> Iterator[Event]:
    tables = select_tables(catalog, config.tables)
    check_trigger_names(catalog, config.trigger_intervals)
    bound = {key: getattr(context.resources, key) for key in resource_keys_of(catalog)}
    ctx = StreamContext(
        spark=_session_keeping_dagster_interrupts(context.resources.spark),
        lake=context.resources.lake,
        source=bound.get(DEFAULT_KAFKA_RESOURCE),
        resources=bound,
    )
    listener = QueryEventListener()
    sessions = QuerySessions(ctx.spark, listener, context.log)
    supervisor = Supervisor(tables, ctx, config, context.log, session_for=sessions.for_query,
                            checks=checks)
    context.log.info(f"running {', '.join(t.name for t in tables)} until terminated")
    with ExitStack() as locks:
        try:
            for table in tables:
                locks.enter_context(exclusive(table, ctx))
            began = last_look = time.time()
            while config.max_runtime_s is None or time.time() - began < config.max_runtime_s:
                supervisor.start_due()
                supervisor.handle(listener.drain())
                supervisor.poll()
                supervisor.probe_sources()
                if supervisor.fatal is not None:
                    raise supervisor.fatal
                yield from supervisor.reports()
                time.sleep(config.poll_interval_s)
                if time.time() - last_look >= 5:
                    last_look = time.time()
                    if _termination_requested(context):
                        raise DagsterExecutionInterruptedError()
            context.log.info(f"max_runtime_s ({config.max_runtime_s:g} s) reached: stopping")
            supervisor.stop_all(config.stop_timeout_s)
            supervisor.handle(listener.drain())
            yield from supervisor.reports(force=True)
        except (DagsterExecutionInterruptedError, KeyboardInterrupt):
            _ignore_further_interrupts()
            context.log.info("termination requested: stopping every query between batches")
            supervisor.stop_all(config.stop_timeout_s)
            supervisor.handle(listener.drain())
            yield from supervisor.reports(force=True)
            raise
        except Exception:
            supervisor.stop_all(config.stop_timeout_s)
            yield from supervisor.reports(force=True)
            raise
        finally:
            supervisor.stop_all(0)
            sessions.close()


def _continuous(run: DagsterRun) -> bool:
    return run.tags.get(MODE_TAG) == CONTINUOUS


def build_continuous_job(
    catalog: Sequence[StreamingTable], name: str = JOB_NAME,
    checks: Mapping[str, DerivedChecks] | None = None,
) -> JobDefinition:
    """The continuous job over the given declarations.

    A builder rather than a module-level job, so that this module does not pick the project's
    tables: project.build_definitions passes the ones it is given, tests pass their own.
    `checks` are the queries' derived checks (monitoring/checks.table_checks), which the run
    evaluates every `checks_interval_s` on the tables it wrote.
    """

    @op(
        name=OP_NAME,
        out={},
        required_resource_keys=resource_keys_of(catalog),
        description="Runs the selected streaming queries until the run is terminated.",
    )
    def run_streams(context: OpExecutionContext, config: ContinuousConfig) -> Iterator[Event]:
        # Every query's pool slot, before the SparkSession starts: a catch-up run of one of
        # the tables makes this run wait for it, another continuous run refuses it.
        with pool_slots(context, select_tables(catalog, config.tables), refuse=_continuous):
            yield from run_continuously(context, config, catalog, checks)

    @job(
        name=name,
        executor_def=in_process_executor,
        tags={MODE_TAG: CONTINUOUS},
        description="Continuous mode: every streaming query (or a selection) with "
        "processing-time triggers in one SparkSession, until the run is terminated.",
    )
    def continuous_job() -> None:
        run_streams()

    return continuous_job
