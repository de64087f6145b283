"""Field checks: rules about one field that the JVM parser judges while it reads the record.

A record rule is a reason and a condition (json_records.py). A condition written as Spark SQL
costs an expression per record after the parse; the common ones about a single field are
declared here instead, and the parser checks the value it has just read, in the same pass:

    rules={
        "unusable event_type": TextCheck("event_type", not_empty=True,
                                         no_control_characters=True, max_bytes=80),
        "timestamp out of range": YearRange("timestamp", first=1, last=9999),
    }

A check judges a record the schema accepted, as any rule does; the first rule a record breaks,
in the order declared, is its reason, whether the rule is a check or SQL. Each check has the
Spark SQL `condition` it stands for, which the parser falls back to where a check follows a
SQL rule (the JVM judges the checks declared before any SQL rule). A check holds for a
missing (null) value: whether a field may be missing is the schema's to say (`required`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pyspark.sql.types import StringType, StructType, TimestampType

from stream_assets.errors import DeclarationError


@dataclass(frozen=True)
class TextCheck:
    """A rule's condition about a top-level string field: its value not empty, without a
    control character (U+0000-U+001F and U+007F), and at most `max_bytes` bytes in UTF-8
    (None: any length), as asked. E.g. `kafka_topic("events", schema=..., rules={"unusable
    event_type": TextCheck("event_type", not_empty=True, max_bytes=80)})`. A missing (null)
    value passes; `condition` is the Spark SQL it stands for."""

    field: str
    not_empty: bool = False
    no_control_characters: bool = False
    max_bytes: int | None = None

    def __post_init__(self) -> None:
        if self.max_bytes is not None and (isinstance(self.max_bytes, bool)
                                           or not isinstance(self.max_bytes, int)
                                           or self.max_bytes < 0):
            raise DeclarationError(f"TextCheck({self.field!r}): max_bytes is a number of bytes "
                                   f"(0 or more) or None, not {self.max_bytes!r}")
        if not (self.not_empty or self.no_control_characters or self.max_bytes is not None):
            raise DeclarationError(f"TextCheck({self.field!r}) checks nothing: ask for "
                                   "not_empty, no_control_characters or max_bytes")

    @property
    def condition(self) -> str:
        """The Spark SQL condition this check stands for."""
        name = _quoted(self.field)
        parts = []
        if self.not_empty:
            parts.append(f"{name} <> ''")
        if self.no_control_characters:
            parts.append(f"NOT {name} RLIKE '\\\\p{{Cntrl}}'")
        if self.max_bytes is not None:
            parts.append(f"octet_length({name}) <= {self.max_bytes}")
        return f"{name} IS NULL OR ({' AND '.join(parts)})"

    def spec(self, reason: str) -> dict[str, Any]:
        """What the JVM parser is given (jvm/udf/.../FieldChecks.java)."""
        return {"kind": "text", "field": self.field, "reason": reason,
                "not_empty": self.not_empty,
                "no_control_characters": self.no_control_characters,
                "max_bytes": self.max_bytes}

    def check_field(self, schema: StructType) -> None:
        """DeclarationError unless `schema` has this top-level field as a string."""
        _check_type(self, schema, StringType, "a string")


@dataclass(frozen=True)
class YearRange:
    """A rule's condition about a top-level timestamp field: its instant from the start of
    year `first` to the end of year `last`, in UTC. The parser reads years 0001-9999 as
    written, but an offset can move an instant out of them (0001-01-01T00:00:00+01:00 is in
    year 0), which most readers other than Spark cannot hold: `YearRange("timestamp")` keeps
    such records out. A missing (null) value passes; `condition` is the Spark SQL it stands
    for."""

    field: str
    first: int = 1
    last: int = 9999

    def __post_init__(self) -> None:
        years = (self.first, self.last)
        if (not all(isinstance(y, int) and not isinstance(y, bool) for y in years)
                or not 1 <= self.first <= self.last <= 9999):
            raise DeclarationError(f"YearRange({self.field!r}): years are from 1 to 9999, first "
                                   f"no later than last, not {self.first!r}-{self.last!r}")

    @property
    def condition(self) -> str:
        """The Spark SQL condition this check stands for (the bounds in UTC, whatever the
        session's time zone)."""
        name = _quoted(self.field)
        return (f"{name} IS NULL OR {name} BETWEEN "
                f"TIMESTAMP'{self.first:04d}-01-01 00:00:00Z' "
                f"AND TIMESTAMP'{self.last:04d}-12-31 23:59:59.999999Z'")

    def spec(self, reason: str) -> dict[str, Any]:
        """What the JVM parser is given (jvm/udf/.../FieldChecks.java)."""
        return {"kind": "years", "field": self.field, "reason": reason,
                "first": self.first, "last": self.last}

    def check_field(self, schema: StructType) -> None:
        """DeclarationError unless `schema` has this top-level field as a timestamp."""
        _check_type(self, schema, TimestampType, "a timestamp")


FieldCheck = TextCheck | YearRange
FIELD_CHECKS = (TextCheck, YearRange)


def _check_type(check: FieldCheck, schema: StructType, kind: type, what: str) -> None:
    fields = {f.name: f for f in schema.fields}
    if check.field not in fields:
        raise DeclarationError(f"{type(check).__name__}({check.field!r}): no such top-level "
                               f"field in the record schema ({', '.join(fields)})")
    if not isinstance(fields[check.field].dataType, kind):
        raise DeclarationError(f"{type(check).__name__}({check.field!r}): the field is "
                               f"{fields[check.field].dataType.simpleString()}, not {what}")


def _quoted(name: str) -> str:
    return "`" + name.replace("`", "``") + "`"
