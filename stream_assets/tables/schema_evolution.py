"""A declared schema that changed since the table was written: grow the table, or refuse.

Adding nullable columns, or nullable fields of a struct column, evolves the Delta table in
place before the query writes (old rows read null), at the next materialization or continuous
start. Anything else (a column removed or renamed, a type changed, a new required field) is
refused before anything is written: the rows already in the table could not follow it.
`additions` is the pure comparison; `evolve` is the one effect, an ALTER TABLE.
"""

from __future__ import annotations

from dataclasses import dataclass

from pyspark.sql import SparkSession
from pyspark.sql.types import DataType, StructType

from stream_assets.errors import SchemaChangeRefused


@dataclass(frozen=True)
class Added:
    """A column or struct field the declaration adds, by its path."""

    path: tuple[str, ...]
    data_type: DataType

    @property
    def name(self) -> str:
        return ".".join(self.path)

    def sql(self) -> str:
        quoted = ".".join("`" + part.replace("`", "``") + "`" for part in self.path)
        return f"{quoted} {self.data_type.simpleString()}"


def additions(table: str, written: StructType, declared: StructType) -> list[Added]:
    """What `declared` adds to the `written` table's schema; SchemaChangeRefused if it also
    changes anything else. Names compare without case, as Spark and Delta resolve them."""
    added: list[Added] = []
    _compare(table, written, declared, (), added)
    return added


def _compare(table: str, written: StructType, declared: StructType, prefix: tuple[str, ...],
             added: list[Added]) -> None:
    by_name = {f.name.lower(): f for f in declared.fields}
    for old in written.fields:
        path = (*prefix, old.name)
        new = by_name.get(old.name.lower())
        if new is None:
            _refuse(table, path, f"{'.'.join(path)} ({old.dataType.simpleString()}) is no "
                    "longer declared: a column cannot be removed or renamed in place")
        elif isinstance(old.dataType, StructType) and isinstance(new.dataType, StructType):
            _compare(table, old.dataType, new.dataType, path, added)
        elif old.dataType.simpleString() != new.dataType.simpleString():
            _refuse(table, path, f"{'.'.join(path)} changes type from "
                    f"{old.dataType.simpleString()} to {new.dataType.simpleString()}: the rows "
                    "already written hold the old type")
    known = {f.name.lower() for f in written.fields}
    for new in declared.fields:
        if new.name.lower() in known:
            continue
        path = (*prefix, new.name)
        if not new.nullable:
            _refuse(table, path, f"{'.'.join(path)} is a new required (NOT NULL) field: the "
                    "rows already written do not have it; declare it nullable")
        added.append(Added(path, new.dataType))


def _refuse(table: str, path: tuple[str, ...], problem: str) -> None:
    raise SchemaChangeRefused(
        f"table {table!r}: the declared schema no longer fits the Delta table: {problem}. "
        "Nothing was written. Either change the declaration back (a new nullable column or "
        "struct field is added in place at the next run), or rebuild the table from its "
        f"sources with a full refresh (materialize {table} with `full_refresh: true`, "
        "docs/operations.md), which rewrites every row in the new schema"
    )


def evolve(spark: SparkSession, sql_table: str, added: list[Added]) -> None:
    """Add the columns to the Delta table (one commit, no data rewritten)."""
    if added:
        spark.sql(f"ALTER TABLE {sql_table} ADD COLUMNS ({', '.join(a.sql() for a in added)})")
