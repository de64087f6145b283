"""Read Kafka records against a declared schema: typed columns, rescued data, an exact reason.

`JsonRecords(schema)` is a parser (stream_assets/tables/sources.py): Kafka-shaped DataFrame in,
the schema's columns plus `_rescued_data`, Kafka's columns and `error` out, the same for batch
and streaming. One strict pass on the JVM (jvm/udf/.../ParseJsonRecord.java) reads each record
once; a refused record gets the first reason in the schema's order, naming the field's path.
A record the schema accepts is then held to the declaration's `rules` (a reason and a Spark SQL
condition, or a field check of checks.py, each), in order: the first it breaks is its reason.
The field checks declared before any SQL condition are judged by the JVM in the same pass;
the others are Spark expressions over its output. The only effect is registering the JVM
function in the DataFrame's session.

What a record may hold, per Spark type: a JSON string for string; a JSON integer in range for
the integral types (`1.0` and `"1"` are not integers); any JSON number for double and float; a
JSON number, or a string holding one, with no more decimals than the scale, for a decimal; true
or false for boolean; ISO-8601 text for timestamp (no offset means UTC; years 0001-9999), for
timestamp_ntz (no offset) and for date (a date only); base64 text for binary; a JSON array for
an array; a JSON object for a map (string keys) or a struct. JSON null is a missing value.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F
from pyspark.sql.types import (
    ArrayType,
    BinaryType,
    BooleanType,
    ByteType,
    DataType,
    DateType,
    DecimalType,
    DoubleType,
    FloatType,
    IntegerType,
    LongType,
    MapType,
    ShortType,
    StringType,
    StructField,
    StructType,
    TimestampNTZType,
    TimestampType,
)

from stream_assets.errors import DeclarationError
from stream_assets.records.checks import FIELD_CHECKS, FieldCheck
from stream_assets.records.functions import register_function

RESCUED = "_rescued_data"
ERROR = "error"
KAFKA_COLUMNS = ("key", "value", "topic", "partition", "offset")
WrongTypes = Literal["dead_letter", "rescue"]
WRONG_TYPES: tuple[WrongTypes, ...] = ("dead_letter", "rescue")
# A rule's condition: Spark SQL about the typed fields, or a check the parser does itself.
Condition = str | FieldCheck

PARSER_CLASS = "io.github.streamassets.udf.ParseJsonRecord"
_SCALARS = (StringType, BooleanType, ByteType, ShortType, IntegerType, LongType, FloatType,
            DoubleType, DecimalType, TimestampType, TimestampNTZType, DateType, BinaryType)
_PARSED = "__record"


@dataclass(frozen=True)
class JsonRecords:
    """A parser for JSON records of a declared schema.

    Fields not in the schema are kept, as the record wrote them, in `_rescued_data` (a JSON
    object by path; null when nothing was left over). A value of the wrong type refuses the
    record (`wrong_types="dead_letter"`) or is rescued the same way with its field left null
    (`"rescue"`; a required field is still refused). A field is required when the schema says
    it is not nullable. `rules` are (reason, condition) pairs about the typed fields: a record
    the schema accepts whose condition is not true (false or null) is refused with the first
    such reason, e.g. ("missing order_id", "order_id <> ''"). A condition may also be a field
    check (stream_assets.records.checks: TextCheck, YearRange), which the parser judges as it
    reads the record, at no cost of its own: ("unusable name", TextCheck("name",
    not_empty=True, max_bytes=80)).
    """

    schema: StructType
    wrong_types: WrongTypes = "dead_letter"
    rules: tuple[tuple[str, Condition], ...] = ()

    def __post_init__(self) -> None:
        if not isinstance(self.schema, StructType):
            raise DeclarationError("a record schema is a pyspark StructType or a DDL string")
        if self.wrong_types not in WRONG_TYPES:
            raise DeclarationError(f"wrong_types must be one of {', '.join(WRONG_TYPES)}, "
                                   f"not {self.wrong_types!r}")
        for field in self.schema.fields:
            if field.name in (RESCUED, ERROR, *KAFKA_COLUMNS):
                raise DeclarationError(f"the record schema cannot have a field {field.name!r}: "
                                       "the parser adds that column itself")
            _check_readable(field.dataType, field.name)
        for rule in self.rules:
            if (not isinstance(rule, tuple) or len(rule) != 2
                    or not isinstance(rule[0], str) or not rule[0].strip()
                    or not (isinstance(rule[1], FIELD_CHECKS)
                            or (isinstance(rule[1], str) and rule[1].strip()))):
                raise DeclarationError(f"record rule {rule!r}: a rule is a reason and a Spark "
                                       "SQL condition or a field check, e.g. (\"missing "
                                       "order_id\", \"order_id <> ''\")")
            if isinstance(rule[1], FIELD_CHECKS):
                rule[1].check_field(self.schema)

    @property
    def columns(self) -> StructType:
        """The typed columns this parser gives a usable record, `_rescued_data` last."""
        return StructType([*self.schema.fields, StructField(RESCUED, StringType(), True)])

    @property
    def function_name(self) -> str:
        # Named after the spec: two tables of one session may read two schemas at once.
        return f"stream_assets_json_{hashlib.sha256(self._spec.encode()).hexdigest()[:16]}"

    @property
    def _jvm_checks(self) -> tuple[tuple[str, FieldCheck], ...]:
        # The checks before the first SQL condition: after one, a check's verdict would come
        # before that condition's, so those are judged as their SQL, in order.
        leading = []
        for reason, condition in self.rules:
            if not isinstance(condition, FIELD_CHECKS):
                break
            leading.append((reason, condition))
        return tuple(leading)

    @property
    def _spec(self) -> str:
        # The JVM's part only: the other rules are Spark expressions over its output.
        spec = {"schema": self.schema.jsonValue(), "wrong_types": self.wrong_types}
        if self._jvm_checks:
            spec["checks"] = [check.spec(reason) for reason, check in self._jvm_checks]
        return json.dumps(spec, sort_keys=True, separators=(",", ":"))

    def __call__(self, kafka: DataFrame) -> DataFrame:
        returns = StructType([*(_nullable(f) for f in self.columns.fields),
                              StructField(ERROR, StringType(), True)])
        register_function(kafka.sparkSession, self.function_name, PARSER_CLASS, returns,
                          "the JSON record parser")
        parsed = kafka.select(
            *KAFKA_COLUMNS,
            F.call_function(self.function_name, F.col("value"),
                            # Bytes: the JVM function would decode a string on every row.
                            F.lit(self._spec.encode()))
            .alias(_PARSED))
        read = parsed.select(
            *[F.col(f"{_PARSED}.`{f.name}`").alias(f.name) for f in self.columns.fields],
            *KAFKA_COLUMNS,
            F.col(f"{_PARSED}.{ERROR}").alias(ERROR),
        )
        in_sql = self.rules[len(self._jvm_checks):]
        if not in_sql:
            return read
        # The schema's verdict and the JVM's checks first; a rule only judges a record whose
        # fields were read.
        broken: Column = F.lit(None).cast("string")
        for reason, condition in reversed(in_sql):
            sql = condition if isinstance(condition, str) else condition.condition
            holds = F.coalesce(F.expr(sql).cast("boolean"), F.lit(False))
            broken = F.when(~holds, F.lit(reason)).otherwise(broken)
        return read.withColumn(ERROR, F.coalesce(F.col(ERROR), broken))


def with_required(schema: StructType, required: Sequence[str]) -> StructType:
    """`schema` with the fields at `required` paths ("customer.id") made not nullable."""
    result = schema
    for path in required:
        result = _require(result, path.split("."), path)
    return result


def _require(struct: StructType, parts: list[str], path: str) -> StructType:
    head, rest = parts[0], parts[1:]
    if head not in struct.fieldNames():
        raise DeclarationError(f"required field {path!r} is not in the record schema "
                               f"({', '.join(struct.fieldNames())})")
    fields = []
    for field in struct.fields:
        if field.name != head:
            fields.append(field)
        elif not rest:
            fields.append(StructField(field.name, field.dataType, False, field.metadata))
        elif isinstance(field.dataType, StructType):
            fields.append(StructField(field.name, _require(field.dataType, rest, path),
                                      field.nullable, field.metadata))
        else:
            raise DeclarationError(f"required field {path!r}: {head} is not a struct")
    return StructType(fields)


def _check_readable(data_type: DataType, path: str) -> None:
    if isinstance(data_type, _SCALARS):
        return
    if isinstance(data_type, ArrayType):
        _check_readable(data_type.elementType, f"{path}[]")
    elif isinstance(data_type, MapType):
        if not isinstance(data_type.keyType, StringType):
            raise DeclarationError(f"record field {path!r}: a JSON object's keys are strings, "
                                   f"so a map needs string keys, not {data_type.keyType}")
        _check_readable(data_type.valueType, f"{path}.*")
    elif isinstance(data_type, StructType):
        for field in data_type.fields:
            _check_readable(field.dataType, f"{path}.{field.name}")
    else:
        raise DeclarationError(f"record field {path!r}: JSON records cannot carry "
                               f"{data_type.simpleString()}")


def _nullable(field: StructField) -> StructField:
    # A refused record has nulls in every field, required or not.
    return StructField(field.name, field.dataType, True, field.metadata)
