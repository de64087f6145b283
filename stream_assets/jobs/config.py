"""The continuous job's run configuration (the Launchpad's fields)."""

from collections.abc import Sequence

from dagster import Config, Failure
from pydantic import Field

from stream_assets.tables.declaration import StreamingTable


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
    max_records_per_batch: int | None = Field(
        default=100_000, ge=1,
        description="Most Kafka records a micro-batch reads when the stream source sets no "
        "max_offsets_per_trigger (Spark's maxOffsetsPerTrigger): a backlog is worked off in "
        "bounded batches, so each query reports within a trigger interval plus one batch of "
        "starting. None: no cap (a first batch reads the whole backlog).",
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
