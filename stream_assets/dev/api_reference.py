"""docs/api.md, rendered from the public names' signatures, fields and docstrings.

Every name in `stream_assets.__all__` gets its signature (a function's parameters, a class's
fields) and its docstring, grouped by what a newcomer does with it. The reference is generated
so it cannot drift from the code: a test renders it and compares it with the committed file.
Regenerate with `python -m stream_assets.dev.api_reference`; `--check` only compares.

Rendering imports the public modules and inspects them; it never builds a resource or a
SparkSession, so no JVM starts (the test checks that too).
"""

from __future__ import annotations

import ast
import dataclasses
import inspect
import re
import sys
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Annotated, Any, Literal, get_args, get_origin

from pydantic import BaseModel
from pydantic_core import PydanticUndefined

import stream_assets
from stream_assets import paths

TARGET = paths.INSTALL_ROOT / "docs" / "api.md"

# (title, what the group is for, its names in reading order). Every name of __all__ is in
# exactly one group; the test holds that.
GROUPS: list[tuple[str, str, tuple[str, ...]]] = [
    ("Declaring tables", "A streaming Delta table is one declaration; everything else (its "
     "asset, query, checkpoint, dead letters, checks and metadata) is derived from it.",
     ("StreamingTable",)),
    ("Sources", "What a table reads, passed in `StreamingTable(sources={name: source})`: a "
     "Kafka topic, another table of the project as a stream, or a batch table joined to the "
     "stream. Build them with the functions; the classes are what the functions return.",
     ("kafka_topic", "upstream", "static", "Parser", "Source", "KafkaTopic", "DeltaStream",
      "StaticTable")),
    ("Field checks", "Rules about one field of a declared record, in `kafka_topic(rules=...)` "
     "next to Spark SQL conditions: the parser judges them as it reads the record, at no cost "
     "of their own.",
     ("TextCheck", "YearRange")),
    ("Sinks", "How a table is written, passed in `StreamingTable(sink=...)`.",
     ("DeltaAppend", "DeltaMerge", "Sink")),
    ("Expectations", "Rules about a table's rows, judged in every micro-batch, passed in "
     "`StreamingTable(expectations=(...))` ([operations.md](operations.md#expectations)).",
     ("expect", "expect_or_drop", "expect_or_fail", "DataExpectation")),
    ("Maintenance", "How the `maintain_tables` job compacts and vacuums a table, passed in "
     "`StreamingTable(maintenance=...)` ([operations.md](operations.md#maintenance)).",
     ("Maintenance",)),
    ("Building definitions", "From a list of tables to a Dagster code location, in Python "
     "(`build_definitions`) or in a `defs.yaml` ([components.md](components.md)).",
     ("build_definitions", "default_resources", "ChecksConfig", "StreamingTablesComponent")),
    ("Resources", "The external systems, as Dagster `ConfigurableResource`s, bound under their "
     "resource keys in `build_definitions(resources=...)`. Every field with its default and "
     "environment variable: [configuration.md](configuration.md).",
     ("SparkResource", "DeltaLake", "KafkaSource", "EventHubsSource")),
    ("Errors", "Every error the package raises for the user to act on is a "
     "`StreamAssetsError`; its message names what to fix and never carries a secret.",
     ("StreamAssetsError", "DeclarationError")),
]

# Methods a project's own code calls (an asset that writes a batch table, say), beyond the
# constructor. Each needs a docstring.
METHODS: dict[str, tuple[str, ...]] = {
    "DeltaLake": ("table_path", "checkpoint_path", "attach"),
}

# A signature longer than this is written one parameter a line.
_WIDTH = 88
# `collections.abc.Sequence` -> `Sequence`: the module path of a name in a rendered type.
_MODULE_PATH = re.compile(r"\b(?:[A-Za-z_]\w*\.)+(?=[A-Za-z_])")


class _Text:
    """Renders as the given text in a Signature (annotations and defaults)."""

    def __init__(self, text: str) -> None:
        self.text = text

    def __repr__(self) -> str:
        return self.text


def public(name: str) -> Any:
    return getattr(stream_assets, name)


def docstring(obj: Any, name: str) -> str:
    """The name's own docstring, cleaned; empty when it has none (an inherited docstring or
    the one dataclasses write from the signature do not count)."""
    if _is_alias(obj):
        return _assignment(name)[1]
    own = obj.__dict__.get("__doc__") if isinstance(obj, type) else obj.__doc__
    if not own:
        return ""
    text = inspect.cleandoc(own)
    if dataclasses.is_dataclass(obj) and text.startswith(f"{obj.__name__}("):
        return ""
    return text


def _is_alias(obj: Any) -> bool:
    return not isinstance(obj, type) and get_origin(obj) is not None


def _assignment(name: str) -> tuple[str, str]:
    """An alias's `NAME = ...` line as written, and the string literal right after it (the
    attribute-docstring convention; empty when there is none)."""
    source = inspect.getsource(sys.modules[stream_assets._EXPORTS[name]])
    body = ast.parse(source).body
    for node, following in zip(body, [*body[1:], None], strict=True):
        if isinstance(node, ast.Assign) and any(
            isinstance(t, ast.Name) and t.id == name for t in node.targets
        ):
            text = ast.get_source_segment(source, node) or name
            if (isinstance(following, ast.Expr) and isinstance(following.value, ast.Constant)
                    and isinstance(following.value.value, str)):
                return text, inspect.cleandoc(following.value.value)
            return text, ""
    raise LookupError(f"{name}: no module-level assignment in {stream_assets._EXPORTS[name]}")


# -- types and defaults ------------------------------------------------------------------------

def type_text(annotation: Any, module: ModuleType | None = None) -> str:
    """An annotation as a reader writes it: `str | None`, `Sequence[StreamingTable]`.

    A string (a postponed annotation) is kept as written, unless it names a Literal alias of
    its module, which is spelt out so the reader sees the allowed values.
    """
    if annotation is inspect.Parameter.empty:
        return ""
    if isinstance(annotation, str):
        alias = getattr(module, annotation, None) if module is not None else None
        if alias is not None and get_origin(alias) is Literal:
            return type_text(alias)
        return annotation
    if get_origin(annotation) is Annotated:
        return type_text(get_args(annotation)[0], module)
    text = inspect.formatannotation(annotation)
    return _MODULE_PATH.sub("", text)


def default_text(value: Any, module: ModuleType | None = None) -> str:
    """A default as code; a module constant by its name rather than its repr."""
    # Exact types: a Dagster policy is a NamedTuple, and is named rather than spelt out.
    if type(value) not in (str, int, float, bool, tuple, type(None)) and module:
        for name, constant in vars(module).items():
            if name.isupper() and constant is value:
                return name
    text = repr(value)
    if " at 0x" in text:
        raise ValueError(f"default {text} has no stable text; name it in a module constant")
    return text


def factory_text(factory: Callable[[], Any]) -> str:
    """A default factory's value as a table cell, without calling anything that may read the
    environment (those defaults are the field's description's to explain)."""
    if factory in (dict, list, tuple):
        return _code(repr(factory()))
    if isinstance(factory, type):
        return _code(f"{factory.__name__}()")
    return "computed when built (see meaning)"


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _code(text: str) -> str:
    return f"`{text}`" if text else ""


# -- one name --------------------------------------------------------------------------------

def signature_text(name: str, function: Callable[..., Any], *, method: bool = False) -> str:
    """`name(parameters) -> result`, one parameter a line when it is long (a method's
    without `self`)."""
    module = sys.modules[function.__module__]
    signature = inspect.signature(function)
    parameters = [
        p.replace(annotation=_Text(type_text(p.annotation, module)) if
                  p.annotation is not p.empty else p.empty,
                  default=_Text(default_text(p.default, module)) if
                  p.default is not p.empty else p.empty)
        for p in list(signature.parameters.values())[1 if method else 0:]
    ]
    result = signature.return_annotation
    plain = signature.replace(
        parameters=parameters,
        return_annotation=_Text(type_text(result, module)) if result is not signature.empty
        else signature.empty,
    )
    one_line = f"{name}{plain}"
    if len(one_line) <= _WIDTH:
        return one_line
    inner = str(plain.replace(return_annotation=signature.empty))[1:-1]
    returns = f" -> {plain.return_annotation}" if result is not signature.empty else ""
    return (f"{name}(\n" + "".join(f"    {p},\n" for p in _split_parameters(inner))
            + f"){returns}")


def _split_parameters(inner: str) -> list[str]:
    """Parameters split on the top-level commas (not those inside brackets or quotes)."""
    parts, depth, quote, start = [], 0, "", 0
    for i, char in enumerate(inner):
        if quote:
            quote = "" if char == quote else quote
        elif char in "'\"":
            quote = char
        elif char in "([{":
            depth += 1
        elif char in ")]}":
            depth -= 1
        elif char == "," and depth == 0:
            parts.append(inner[start:i].strip())
            start = i + 1
    parts.append(inner[start:].strip())
    return parts


def _public_bases(cls: type) -> list[str]:
    """The names of a class's bases, a private base replaced by its own."""
    names: list[str] = []
    for base in cls.__bases__:
        if base is object:
            continue
        names += _public_bases(base) if base.__name__.startswith("_") else [base.__name__]
    return names


def class_line(cls: type) -> str:
    bases = _public_bases(cls)
    return f"class {cls.__name__}" + (f"({', '.join(bases)})" if bases else "")


def dataclass_fields(cls: type) -> list[str]:
    """field | type | default, plus meaning when a field carries a description (a component's
    resolver)."""
    module = sys.modules[cls.__module__]
    rows = []
    described = False
    for f in dataclasses.fields(cls):
        if not f.init:
            continue
        if f.default is not dataclasses.MISSING:
            default = _code(default_text(f.default, module))
        elif f.default_factory is not dataclasses.MISSING:
            default = factory_text(f.default_factory)
        else:
            default = "required"
        meaning = ""
        if get_origin(f.type) is Annotated:
            meaning = next((getattr(m, "description", "") or "" for m in f.type.__metadata__
                            if getattr(m, "description", None)), "")
            described = described or bool(meaning)
        rows.append((f.name, type_text(f.type, module), default, meaning))
    return _field_table(rows, described)


def model_fields(cls: type[BaseModel]) -> list[str]:
    """field | type | default | meaning of a pydantic model (a Dagster resource or config)."""
    rows = []
    for name, f in cls.model_fields.items():
        if f.default_factory is not None:
            default = factory_text(f.default_factory)
        elif f.default is PydanticUndefined:
            default = "required"
        else:
            default = _code(default_text(f.default))
        rows.append((name, type_text(f.annotation), default, f.description or ""))
    return _field_table(rows, True)


def _field_table(rows: list[tuple[str, str, str, str]], described: bool) -> list[str]:
    if not rows:
        return []
    if described:
        out = ["| field | type | default | meaning |", "| --- | --- | --- | --- |"]
        out += [f"| `{n}` | {_cell(_code(t))} | {_cell(d)} | {_cell(m)} |"
                for n, t, d, m in rows]
    else:
        out = ["| field | type | default |", "| --- | --- | --- |"]
        out += [f"| `{n}` | {_cell(_code(t))} | {_cell(d)} |" for n, t, d, _ in rows]
    return out


def methods(cls: type, names: tuple[str, ...]) -> list[str]:
    out = []
    for method_name in names:
        method = getattr(cls, method_name)
        text = inspect.cleandoc(method.__doc__ or "")
        out.append(f"- `{signature_text(method_name, method, method=True)}`: "
                   + text.replace("\n", " "))
    return out


def entry(name: str) -> list[str]:
    """The section of one public name: signature, docstring, fields or methods."""
    obj = public(name)
    out = [f"### `{name}`", ""]
    doc = docstring(obj, name)
    if _is_alias(obj):
        out += ["```python", _assignment(name)[0], "```", "", doc]
    elif isinstance(obj, type):
        out += ["```python", class_line(obj), "```", "", doc]
        if issubclass(obj, BaseModel):
            fields = model_fields(obj)
            if fields:
                out += ["", "Keyword arguments:", "", *fields]
        elif dataclasses.is_dataclass(obj):
            fields = dataclass_fields(obj)
            if fields:
                out += ["", "Fields (the constructor's arguments):", "", *fields]
        if name in METHODS:
            out += ["", "Methods:", "", *methods(obj, METHODS[name])]
    else:
        out += ["```python", signature_text(name, obj), "```", "", doc]
    return out


def _anchor(title: str) -> str:
    return re.sub(r"[^a-z0-9 -]", "", title.lower()).replace(" ", "-")


def render() -> str:
    out = [
        "# API reference",
        "",
        "Generated from the docstrings by `python -m stream_assets.dev.api_reference`; a test",
        "keeps it current. Every name here is imported from the package itself",
        "(`from stream_assets import StreamingTable, kafka_topic`); anything else is internal",
        "and may change. The README's \"Your own tables\" shows them together;",
        "[dimensions.md](dimensions.md) shows a batch table that a stream joins.",
        "",
        *(f"- [{title}](#{_anchor(title)}): "
          + ", ".join(f"`{n}`" for n in names) for title, _, names in GROUPS),
    ]
    for title, text, names in GROUPS:
        out += ["", f"## {title}", "", text]
        for name in names:
            out += ["", *entry(name)]
    return "\n".join(out) + "\n"


def main(argv: list[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    check = "--check" in args
    args = [a for a in args if a != "--check"]
    target = Path(args[0]) if args else TARGET
    text = render()
    if check:
        if not target.exists() or target.read_text() != text:
            print(f"{target} is out of date: run `python -m stream_assets.dev.api_reference`",
                  file=sys.stderr)
            return 1
        return 0
    target.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
