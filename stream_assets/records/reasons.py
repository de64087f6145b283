"""The reasons a record is refused: part of the contract, since alerts, checks and users
filter the dead letters on them. The ones about a field name its path (`items[2].qty`).

The JVM parsers write them (jvm/udf); these are the ones Python code gives or checks itself.
`duplicate key: <path>` and `not a JSON object` come only from ParseJsonRecord."""

from __future__ import annotations

NULL_VALUE = "null value (tombstone)"
EMPTY_VALUE = "empty value"
NOT_UTF8 = "value is not valid UTF-8"
INVALID_JSON = "invalid JSON"


def missing(path: str) -> str:
    return f"missing {path}"


def wrong_type(path: str, expected: str) -> str:
    return f"wrong type: {path} must be {expected}"
