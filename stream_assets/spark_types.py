"""A Spark type built in Python, as the DDL text Spark reads: the form every type of the
project takes when it crosses to Spark (a cast, a function's return type).

Why not the DataType object itself: Spark Connect sends a DataType as a protocol message in
which every string names its collation, and a Spark 4.2 server turns that into an explicitly
collated `string collate UTF8_BINARY`, where a classic session keeps plain `string`. The type
then reaches the data: Delta writes it into the table's schema, and readers that know no
collations (delta-rs: "Unsupported Delta table type") refuse the whole table. The same type as
DDL text is parsed by the server like any SQL, into plain `string`, in a classic session and
over Spark Connect alike, so the two write the same schemas.

DDL says everything a table's schema says (names, types, a struct field's NOT NULL, its
comment), except that an array's elements and a map's values are always nullable: Spark reads
`ARRAY<INT>` as `containsNull = true`.
"""

from __future__ import annotations

from pyspark.sql.types import (
    ArrayType,
    DataType,
    MapType,
    StringType,
    StructField,
    StructType,
    UserDefinedType,
)


def ddl(data_type: DataType) -> str:
    """`data_type` as Spark DDL, e.g. ``STRUCT<`id`: STRING NOT NULL, `tags`: ARRAY<STRING>>``."""
    if isinstance(data_type, StringType):
        # Only a collation other than the default is named: UTF8_BINARY is what plain
        # `STRING` means, and naming it is what makes a type explicitly collated.
        if data_type.isUTF8BinaryCollation():
            return "STRING"
        return f"STRING COLLATE {_identifier(data_type.collation)}"
    if isinstance(data_type, StructType):
        return f"STRUCT<{', '.join(_field(f) for f in data_type.fields)}>"
    if isinstance(data_type, ArrayType):
        return f"ARRAY<{ddl(data_type.elementType)}>"
    if isinstance(data_type, MapType):
        return f"MAP<{ddl(data_type.keyType)}, {ddl(data_type.valueType)}>"
    if isinstance(data_type, UserDefinedType):
        raise TypeError(f"{data_type!r} is a user-defined type, which Spark DDL cannot name")
    # Every other type's simple string is its DDL name: int, decimal(12,2), timestamp_ntz...
    return data_type.simpleString()


def _field(field: StructField) -> str:
    text = f"{_identifier(field.name)}: {ddl(field.dataType)}"
    if not field.nullable:
        text += " NOT NULL"
    comment = (field.metadata or {}).get("comment")
    if comment is not None:
        text += f" COMMENT {_string(str(comment))}"
    return text


def _identifier(name: str) -> str:
    return "`" + name.replace("`", "``") + "`"


def _string(text: str) -> str:
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"
