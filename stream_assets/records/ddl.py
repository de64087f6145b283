"""A schema written as Spark DDL ("id STRING NOT NULL, amount DECIMAL(12,2)") as a StructType.

Read with sqlglot's Spark dialect, so a declaration is checked when Python loads it, without a
JVM: a type Spark does not have, or one a JSON record cannot carry, fails with the column.
"""

from __future__ import annotations

import sqlglot
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
from sqlglot import exp
from sqlglot.errors import ParseError

from stream_assets.errors import DeclarationError

_T = exp.DataType.Type
_SIMPLE: dict[exp.DataType.Type, DataType] = {
    _T.TEXT: StringType(), _T.VARCHAR: StringType(), _T.CHAR: StringType(),
    _T.BOOLEAN: BooleanType(), _T.TINYINT: ByteType(), _T.SMALLINT: ShortType(),
    _T.INT: IntegerType(), _T.BIGINT: LongType(), _T.FLOAT: FloatType(),
    _T.DOUBLE: DoubleType(), _T.DATE: DateType(), _T.BINARY: BinaryType(),
    # Spark's TIMESTAMP is an instant (sqlglot's TIMESTAMPTZ); TIMESTAMP_LTZ is the same.
    _T.TIMESTAMPTZ: TimestampType(), _T.TIMESTAMPLTZ: TimestampType(),
    _T.TIMESTAMP: TimestampType(), _T.TIMESTAMPNTZ: TimestampNTZType(),
}


def parse_schema(ddl: str) -> StructType:
    """'name TYPE [NOT NULL] [COMMENT '...'], ...' as a StructType; DeclarationError if not."""
    try:
        _refuse_empty_items(ddl)
        statement = sqlglot.parse_one(f"CREATE TABLE t ({ddl})", read="spark")
    except ParseError as exc:
        raise DeclarationError(f"schema {ddl!r} is not Spark DDL ('name TYPE, ...'): "
                               f"{exc.errors[0]['description'] if exc.errors else exc}") from None
    columns = statement.this.expressions if isinstance(statement.this, exp.Schema) else []
    if not columns or not all(isinstance(c, exp.ColumnDef) for c in columns):
        raise DeclarationError(f"schema {ddl!r} is not Spark DDL ('name TYPE, ...')")
    return StructType([_field(c, c.name) for c in columns])


def _refuse_empty_items(ddl: str) -> None:
    # sqlglot skips an empty item ("a INT,, b INT", a trailing comma); Spark refuses it.
    comma = sqlglot.TokenType.COMMA
    tokens = [None, *(t.token_type for t in sqlglot.tokenize(ddl, read="spark")), None]
    after_item_ends = (comma, sqlglot.TokenType.R_PAREN, sqlglot.TokenType.GT, None)
    for before, token, after in zip(tokens, tokens[1:], tokens[2:], strict=False):
        if token == comma and (before in (comma, None) or after in after_item_ends):
            raise ParseError("an empty item between commas")


def _field(column: exp.ColumnDef, path: str) -> StructField:
    kind = column.args.get("kind")
    if kind is None:
        raise DeclarationError(f"schema: column {path!r} has no type")
    constraints = [c.args.get("kind") for c in column.args.get("constraints") or []]
    not_null = any(isinstance(c, exp.NotNullColumnConstraint) and not c.args.get("allow_null")
                   for c in constraints)
    comments = [c.this.name for c in constraints if isinstance(c, exp.CommentColumnConstraint)]
    metadata = {"comment": comments[0]} if comments else {}
    return StructField(column.name, _type(kind, path), not not_null, metadata)


def _type(kind: exp.DataType, path: str) -> DataType:
    if kind.this in _SIMPLE:
        return _SIMPLE[kind.this]
    params = kind.expressions
    if kind.this == _T.DECIMAL:
        # Spark's DECIMAL without arguments is decimal(10,0).
        numbers = [int(p.this.name) for p in params] or [10, 0]
        return DecimalType(numbers[0], numbers[1] if len(numbers) > 1 else 0)
    if kind.this == _T.ARRAY and len(params) == 1:
        return ArrayType(_type(params[0], f"{path}[]"))
    if kind.this == _T.MAP and len(params) == 2:
        return MapType(_type(params[0], f"{path} key"), _type(params[1], f"{path}.*"))
    if kind.this == _T.STRUCT:
        return StructType([_field(f, f"{path}.{f.name}") for f in params])
    # Which of the known types a record format can carry is the parser's to say
    # (json_records._check_readable); this only reads the DDL.
    raise DeclarationError(f"schema: column {path!r} has type {kind.sql('spark')}, which a "
                           "record schema cannot declare (see stream_assets.records.json_records)")
