"""Whether an expectation's condition is Spark SQL about the table's columns, checked at load.

Read with sqlglot's Spark dialect (as records/ddl.py reads a schema), so a rule that does not
parse, or names a column the table does not have, fails when the code location loads, without
a JVM, instead of in the query's first micro-batch. Spark stays the judge of what the rule
means: only what is certainly wrong is reported, never a function name or a type.

Names are matched as Spark matches them by default: case-insensitively, `a.b` as field `b` of
a struct column `a` (of each element, for an array of structs; any key of a map), and a leading
part as the name of the DataFrame when no column has it (`o.amount` after an alias).
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence

from pyspark.sql.types import ArrayType, StructField, StructType
from sqlglot import exp
from sqlglot.dialects.dialect import Dialect
from sqlglot.errors import ParseError, TokenError
from sqlglot.tokens import Token, TokenType

_SPARK = Dialect.get_or_raise("spark")
# Spark reads these names without brackets as functions when no column has them.
_BARE_FUNCTIONS = frozenset({"current_date", "current_time", "current_timestamp",
                             "current_user", "localtimestamp", "session_user", "user"})
_PLAIN_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
# sqlglot names its node classes in errors: "missing for <class 'sqlglot....GT'>" reads "GT".
_CLASS = re.compile(r"<class '(?:\w+\.)*(\w+)'>")
_EXAMPLE = 'e.g. "amount >= 0" or "customer.id IS NOT NULL"'
_QUERY = f"is a query; write a condition about one row, {_EXAMPLE}"


def problem(condition: str, columns: StructType | None) -> str | None:
    """What is wrong with `condition`, None when nothing is.

    It must be one Spark SQL expression that a row can pass (not a query, a `*` or a
    constant); with `columns` (None: not known before the query runs), each column it names
    must be one of them, and each field a field of it.
    """
    tree = _parsed(condition)
    if isinstance(tree, str):
        return tree
    if isinstance(tree, exp.Query):
        return _QUERY
    if isinstance(tree, exp.Star) or (isinstance(tree, exp.Column) and tree.is_star):
        return f"is `*`; write a condition about one row, {_EXAMPLE}"
    if isinstance(tree, exp.Literal):
        return f"is a constant, the same for every row; write a condition, {_EXAMPLE}"
    if columns is None:
        return None
    for path in _column_paths(tree):
        wrong = _misfit(path, columns)
        if wrong:
            return wrong
    return None


def _parsed(condition: str) -> exp.Expression | str:
    """The expression's tree, or why there is none."""
    try:
        tokens = _SPARK.tokenize(condition)
    except TokenError as exc:
        return f"does not parse as Spark SQL ({exc}); is a quote left open?"
    if any(t.token_type == TokenType.SEMICOLON for t in tokens):
        return "is one expression, without ';'"
    try:
        trees = _SPARK.parser().parse_into(exp.Condition, tokens, condition)
    except ParseError as exc:
        return _QUERY if _is_query(tokens, condition) else (
            f"does not parse as Spark SQL: {_where(exc)}")
    if not trees or trees[0] is None:
        return f"is empty; write a condition, {_EXAMPLE}"
    return trees[0]


def _is_query(tokens: list[Token], condition: str) -> bool:
    """Whether the text is a whole query (SELECT ...) rather than an expression."""
    try:
        trees = _SPARK.parser().parse(tokens, condition)
    except ParseError:
        return False
    return bool(trees) and isinstance(trees[0], exp.Query)


def _where(error: ParseError) -> str:
    """sqlglot's first error in a line: what, at which column, near which text."""
    if not error.errors:
        return str(error).splitlines()[0]
    first = error.errors[0]
    text = _CLASS.sub(r"\1", str(first.get("description") or "invalid expression"))
    if first.get("col"):
        text += f" at column {first['col']}"
    if first.get("highlight"):
        text += f", near {first['highlight']!r}"
    return text


def _column_paths(tree: exp.Expression) -> Iterator[tuple[str, ...]]:
    """Each column the expression names, with the fields it reads: ('customer', 'id').

    Lambda variables (`i` in `exists(items, i -> i.qty > 0)`) are not columns: sqlglot keeps
    them as identifiers, so they are not among the Column nodes.
    """
    for column in tree.find_all(exp.Column):
        if column.is_star:
            continue
        path = [part.name for part in column.parts]
        node: exp.Expression = column
        # sqlglot keeps four parts in a Column; the fields after them are Dots around it.
        while isinstance(node.parent, exp.Dot) and node.parent.this is node:
            node = node.parent
            path.append(node.expression.name)
        yield tuple(path)


def _misfit(path: tuple[str, ...], columns: StructType) -> str | None:
    """Why `path` names nothing among `columns`, None when it names something."""
    # A leading part may be the DataFrame's name: any tail that fits is what Spark reads.
    wrongs = [_unknown(path[start:], columns) for start in range(len(path))]
    if None in wrongs:
        return None
    if len(path) == 1 and path[0].lower() in _BARE_FUNCTIONS:
        return None
    return wrongs[0]


def _unknown(path: Sequence[str], columns: StructType) -> str | None:
    field = _field(columns, path[0])
    if field is None:
        return (f"names {_shown(path[:1])}, which is not a column of the table; its "
                f"columns: {', '.join(_shown([n]) for n in columns.fieldNames())}")
    kind = field.dataType
    for depth in range(1, len(path)):
        while isinstance(kind, ArrayType):
            kind = kind.elementType
        if not isinstance(kind, StructType):
            # A map's key, or a field of something Spark types only when the query runs.
            return None
        inner = _field(kind, path[depth])
        if inner is None:
            return (f"names {_shown(path[:depth + 1])}, but {_shown(path[:depth])} has no "
                    f"field {_shown(path[depth:depth + 1])}; its fields: "
                    f"{', '.join(_shown([n]) for n in kind.fieldNames())}")
        kind = inner.dataType
    return None


def _field(struct: StructType, name: str) -> StructField | None:
    """The field called `name`, in any case, as Spark finds it by default."""
    return next((f for f in struct.fields if f.name.lower() == name.lower()), None)


def _shown(path: Sequence[str]) -> str:
    """A path as it is written in Spark SQL: a name that is not plain goes in backticks."""
    return ".".join(p if _PLAIN_NAME.fullmatch(p) else "`" + p.replace("`", "``") + "`"
                    for p in path)
