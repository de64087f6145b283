"""Data-quality expectations of a table, judged inside its streaming query (docs/operations.md).

An expectation is a name, a Spark SQL boolean expression over the table's rows and an action:
`warn` keeps a violating row and counts it, `drop` sends it to the table's dead letters with the
expectation's name as the reason, `fail` stops the batch before anything of it is written. A
row passes only when the expression is true: null (unknown) is a violation, so a rule about a
column that may be missing says so (`amount IS NULL OR amount >= 0`).

The counts of every micro-batch travel with the query's progress as Spark observable metrics
(one `observe` per query, named OBSERVATION), so they reach Dagster the same way locally,
on a cluster and through Spark Connect. Pure functions of DataFrames; nothing here writes.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Literal

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

from stream_assets.errors import DeclarationError

Action = Literal["warn", "drop", "fail"]
ACTIONS: tuple[Action, ...] = ("warn", "drop", "fail")
OBSERVATION = "stream_assets_expectations"
ROWS = "rows"
RESCUED_CHECK = "rescued_data"
# A name is a Dagster check name: letters, digits and underscores.
_NAME_CHARS = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_")


@dataclass(frozen=True)
class DataExpectation:
    """One rule about a table's rows. Build it with `expect`, `expect_or_drop`, `expect_or_fail`.

    `name` names its asset check and, for `drop`, the dead letters' reason; `condition` is a
    Spark SQL boolean expression a row passes when it is true (null is a violation); `action`
    is what a violating row does: `warn` (kept, counted), `drop` (sent to the dead letters) or
    `fail` (the batch is not written). `max_violation_ratio` is the share of a batch's rows
    that may violate it before its asset check fails (and the health sensor alerts); 0 means
    any violation fails the check.
    """

    name: str
    condition: str
    action: Action = "warn"
    max_violation_ratio: float = 0.0

    def __post_init__(self) -> None:
        if not self.name or set(self.name) - _NAME_CHARS:
            raise DeclarationError(
                f"expectation {self.name!r}: a name is letters, digits and underscores (it "
                "names an asset check)"
            )
        if self.action not in ACTIONS:
            raise DeclarationError(f"expectation {self.name!r}: action must be one of "
                                   f"{', '.join(ACTIONS)}, not {self.action!r}")
        if not isinstance(self.condition, str) or not self.condition.strip():
            raise DeclarationError(f"expectation {self.name!r}: the condition is a Spark SQL "
                                   "boolean expression, e.g. \"amount >= 0\"")
        if not 0.0 <= self.max_violation_ratio <= 1.0:
            raise DeclarationError(f"expectation {self.name!r}: max_violation_ratio is a share "
                                   "between 0 and 1")

    def passes(self) -> Column:
        return F.coalesce(F.expr(self.condition).cast("boolean"), F.lit(False))

    @property
    def metric(self) -> str:
        return f"failed_{self.name}"

    @property
    def check_description(self) -> str:
        """What the rule's asset check is, in the UI."""
        return f"Expectation ({self.action}): {self.condition}"

    def metrics(self, counted: Column) -> list[Column]:
        """What a batch observes for this rule, over the rows `counted` selects."""
        return [F.count_if(counted & ~F.col(_flag(self))).alias(self.metric)]

    def describe(self, outcome: Outcome) -> str:
        """The check's description of an outcome of this rule."""
        if outcome.stopped_batch:
            return f"a batch violated {self.condition}; nothing of it was written"
        done = {"warn": "kept", "drop": "sent to the dead letters", "fail": "stopped the batch"}
        return (f"{outcome.violations} of {outcome.rows} rows violated {self.condition} "
                f"({done[self.action]}); allowed share {self.max_violation_ratio:.2%}")

    def summary(self, outcome: Outcome) -> str:
        """One line for an alert about a failing outcome."""
        return (f"{self.name}: {outcome.ratio:.1%} of {outcome.rows} rows violated "
                f"(allowed {self.max_violation_ratio:.2%})")


@dataclass(frozen=True)
class RescuedFields(DataExpectation):
    """Rows with fields their record schema does not name (kept in `column`): schema drift.

    Every table read with a declared record schema has this rule, as the check
    `rescued_data` (WARN): it fails while records carry fields the schema does not name, and
    its description names them, so the health sensor's alert says which fields to declare.
    """

    column: str = "_rescued_data"

    @classmethod
    def of(cls, column: str) -> RescuedFields:
        return cls(RESCUED_CHECK, f"`{column}` IS NULL", "warn", 0.0, column)

    @property
    def check_description(self) -> str:
        return (f"Schema drift: rows with fields the record schema does not name (kept in "
                f"{self.column}); warns, naming them, until the schema declares them")

    @property
    def fields_metric(self) -> str:
        return f"fields_{self.name}"

    def metrics(self, counted: Column) -> list[Column]:
        keys = F.when(counted, F.json_object_keys(F.col(self.column)))
        names = F.array_sort(F.array_distinct(F.flatten(F.collect_set(keys))))
        return [*super().metrics(counted), names.alias(self.fields_metric)]

    def describe(self, outcome: Outcome) -> str:
        if not outcome.violations:
            return f"no row of {outcome.rows} carried a field the schema does not name"
        return (f"{outcome.violations} of {outcome.rows} rows carried fields the schema does "
                f"not name, kept in {self.column}: {', '.join(outcome.fields)}")

    def summary(self, outcome: Outcome) -> str:
        return (f"{self.name}: fields the schema does not name in {outcome.violations} of "
                f"{outcome.rows} rows: {', '.join(outcome.fields)}")


def expect(name: str, condition: str, *, max_violation_ratio: float = 0.0) -> DataExpectation:
    """Count the rows that violate `condition`; keep them in the table."""
    return DataExpectation(name, condition, "warn", max_violation_ratio)


def expect_or_drop(name: str, condition: str, *, max_violation_ratio: float = 0.0
                   ) -> DataExpectation:
    """Send the rows that violate `condition` to the dead letters, reason `name`."""
    return DataExpectation(name, condition, "drop", max_violation_ratio)


def expect_or_fail(name: str, condition: str) -> DataExpectation:
    """Stop the batch (nothing of it written) when any row violates `condition`."""
    return DataExpectation(name, condition, "fail", 0.0)


def verdict_columns(expectations: Sequence[DataExpectation]) -> dict[str, Column]:
    """One boolean column per expectation: whether the row passes it."""
    return {_flag(e): e.passes() for e in expectations}


def _flag(expectation: DataExpectation) -> str:
    return f"__passes_{expectation.name}"


def judged(rows: DataFrame, expectations: Sequence[DataExpectation],
           counted: Column | None = None) -> DataFrame:
    """`rows` with a pass flag per expectation and the batch's counts observed.

    `counted` says which rows are the table's (the others are dead letters riding along); the
    flags are computed once, in one projection, so each rule is evaluated once per row.
    """
    flagged = rows.withColumns(verdict_columns(expectations))
    is_row = counted if counted is not None else F.lit(True)
    metrics = [F.count_if(is_row).alias(ROWS)]
    metrics += [metric for e in expectations for metric in e.metrics(is_row)]
    return flagged.observe(OBSERVATION, *metrics)


def first_drop_reason(expectations: Sequence[DataExpectation]) -> Column:
    """The name of the first `drop` expectation a row violates, null when it violates none."""
    reason: Column = F.lit(None).cast("string")
    for e in reversed([e for e in expectations if e.action == "drop"]):
        reason = F.when(~F.col(_flag(e)), F.lit(e.name)).otherwise(reason)
    return reason


def without_flags(rows: DataFrame, expectations: Sequence[DataExpectation]) -> DataFrame:
    return rows.drop(*[_flag(e) for e in expectations])


def fail_violations(rows: DataFrame, expectations: Sequence[DataExpectation]) -> Column | None:
    """A condition true for rows that violate a `fail` expectation (None when there is none)."""
    failing = [~F.col(_flag(e)) for e in expectations if e.action == "fail"]
    if not failing:
        return None
    condition = failing[0]
    for more in failing[1:]:
        condition = condition | more
    return condition


def first_failed(row: Mapping[str, object], expectations: Sequence[DataExpectation]
                 ) -> DataExpectation:
    return next(e for e in expectations if e.action == "fail" and not row[_flag(e)])


def counts_of(observed: Mapping[str, object] | None, expectations: Sequence[DataExpectation]
              ) -> dict[str, int]:
    """{ROWS: n, expectation name: violations} from one progress report's observed row."""
    if not observed:
        return {}
    counts = {ROWS: int(observed.get(ROWS) or 0)}
    for e in expectations:
        counts[e.name] = int(observed.get(e.metric) or 0)
    return counts


def observed_counts(progress: Sequence[Mapping], expectations: Sequence[DataExpectation]
                    ) -> dict[str, int]:
    """The counts of every batch in `progress` (progress reports as JSON dicts), added up."""
    total = {ROWS: 0, **{e.name: 0 for e in expectations}}
    for observed in _observed(progress):
        for name, count in counts_of(observed, expectations).items():
            total[name] += count
    return total


def _observed(progress: Sequence[Mapping]) -> Iterator[Mapping[str, object]]:
    for report in progress:
        observed = (report.get("observedMetrics") or {}).get(OBSERVATION)
        if observed:
            yield observed


def judge(progress: Sequence[Mapping], expectations: Sequence[DataExpectation]
          ) -> list[Outcome]:
    """Each expectation's outcome over the batches of `progress` (progress reports as dicts)."""
    outcomes_ = outcomes(observed_counts(progress, expectations), expectations)
    named = {}
    for e in expectations:
        if isinstance(e, RescuedFields):
            names = {n for observed in _observed(progress)
                     for n in observed.get(e.fields_metric) or ()}
            named[e.name] = tuple(sorted(names))
    return [replace(o, fields=named.get(o.expectation.name, ())) for o in outcomes_]


@dataclass(frozen=True)
class Outcome:
    """An expectation's verdict over some batches, as an asset check reports it."""

    expectation: DataExpectation
    rows: int
    violations: int
    # A `fail` expectation that stopped a batch: no counts reach the progress then.
    stopped_batch: bool = False
    # What the rows named, for a rule that observes names (RescuedFields).
    fields: tuple[str, ...] = ()

    @property
    def ratio(self) -> float:
        return self.violations / self.rows if self.rows else 0.0

    @property
    def passed(self) -> bool:
        if self.stopped_batch:
            return False
        if self.expectation.action == "fail":
            return self.violations == 0
        return self.ratio <= self.expectation.max_violation_ratio

    @property
    def severity(self) -> str:
        return "ERROR" if self.expectation.action == "fail" else "WARN"

    @property
    def description(self) -> str:
        return self.expectation.describe(self)

    @property
    def summary(self) -> str:
        return self.expectation.summary(self)

    def metadata(self) -> dict[str, object]:
        if self.stopped_batch:
            return {"action": self.expectation.action, "condition": self.expectation.condition}
        return {
            "rows_checked": self.rows,
            "rows_failed": self.violations,
            "rows_passed": self.rows - self.violations,
            "violation_ratio": round(self.ratio, 6),
            "max_violation_ratio": self.expectation.max_violation_ratio,
            "action": self.expectation.action,
            "condition": self.expectation.condition,
            **({"fields": list(self.fields)} if self.fields else {}),
        }


def outcomes(counts: Mapping[str, int], expectations: Sequence[DataExpectation]
             ) -> list[Outcome]:
    rows = counts.get(ROWS, 0)
    return [Outcome(e, rows, counts.get(e.name, 0)) for e in expectations]


def stopped_by(error: str, expectations: Sequence[DataExpectation]) -> list[Outcome]:
    """The `fail` expectation named in the error of a batch it stopped (writes.py's text)."""
    return [Outcome(e, 0, 0, stopped_batch=True) for e in expectations
            if e.action == "fail" and f"expectation {e.name!r}" in error]
