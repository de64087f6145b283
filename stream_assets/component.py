"""The streaming tables as a Dagster component: a `defs.yaml` instead of Python wiring.

A dg project names the module that declares its tables, its Kafka (or Event Hubs) sources, its
lake and its Spark in YAML; the component hands them to `build_definitions` (project.py), so
there is one way to build a project's definitions. The demo loads itself this way
(stream_assets/defs/streaming_tables/defs.yaml); docs/components.md shows a project's.

A wrong YAML fails when the code location loads, naming the field and what to write instead.
Secrets (a SASL password, an Event Hubs connection string) are only taken as the name of an
environment variable, `"{{ env.NAME }}"`: they become `dagster.EnvVar`s, read when a run starts,
so the value is neither in the YAML nor in the resource configuration the UI shows.
"""

# No `from __future__ import annotations`: Dagster reads the fields' Annotated resolvers at
# run time.
import difflib
import importlib
import os
import re
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Annotated, Any

import dagster as dg
from dagster import AssetsDefinition, AssetSpec, EnvVar
from pydantic import BaseModel, ConfigDict, Field, create_model

from stream_assets.errors import DeclarationError
from stream_assets.monitoring.check_config import ChecksConfig
from stream_assets.project import build_definitions
from stream_assets.resources import DeltaLake, EventHubsSource, KafkaSource, SparkResource
from stream_assets.resources.kafka import BOOTSTRAP_ENV
from stream_assets.tables.declaration import StreamingTable

# Fields whose value is a secret: only "{{ env.NAME }}" is taken for them.
SECRET_FIELDS: Mapping[type[BaseModel], frozenset[str]] = {
    KafkaSource: frozenset({"sasl_password"}),
    EventHubsSource: frozenset({"connection_string"}),
    DeltaLake: frozenset({"s3_secret_access_key"}),
}
_ENV_TEMPLATE = re.compile(
    r"""\{\{\s*env(?:\.([A-Za-z_]\w*)|\(\s*['"]([A-Za-z_]\w*)['"]\s*\))\s*\}\}"""
)


class _YamlModel(dg.Model):
    # Unknown fields pass validation and are refused by `known_fields` while resolving:
    # Dagster's report of a validation error quotes the offending value, and a misspelt
    # secret field's value is the secret.
    model_config = ConfigDict(extra="allow")


@cache
def yaml_model(resource: type[BaseModel]) -> type[BaseModel]:
    """The YAML form of a resource: its own fields and descriptions, each optional.

    Derived from the resource so the two cannot drift; an unset field keeps the resource's
    default (several read the environment, e.g. KafkaSource.bootstrap_servers). A secret
    field takes any value here, so that a wrong one is refused by `_secret`, unquoted.
    """
    secrets = SECRET_FIELDS.get(resource, frozenset())
    fields: dict[str, Any] = {
        name: (Any if name in secrets else info.annotation | None,
               Field(default=None, description=info.description))
        for name, info in resource.model_fields.items()
    }
    return create_model(f"{resource.__name__}Yaml", __base__=_YamlModel, **fields)


def known_fields(raw: BaseModel, resource: type[BaseModel], where: str) -> dict[str, Any]:
    """The fields set in the YAML; a DeclarationError naming any unknown one, never its value."""
    unknown = sorted(raw.model_extra or {})
    if unknown:
        fields = list(resource.model_fields)
        hints = []
        for name in unknown:
            close = difflib.get_close_matches(name, fields, n=1)
            hints.append(f"{name!r}" + (f" (did you mean {close[0]!r}?)" if close else ""))
        raise DeclarationError(
            f"{where}: unknown field{'s' if len(unknown) > 1 else ''} {', '.join(hints)}; "
            f"the fields are {', '.join(fields)}"
        )
    return raw.model_dump(exclude_unset=True)


def load_object(reference: str, what: str) -> Any:
    """The object `module:attribute` names, or a DeclarationError saying what to fix."""
    module_name, sep, attribute = reference.partition(":")
    if not sep or not module_name or not attribute:
        raise DeclarationError(
            f"{what}: {reference!r} must be 'module:attribute', e.g. 'my_project.tables:TABLES'"
        )
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        # Only the named module (or a parent package) missing is the YAML's fault; a missing
        # import inside the user's module surfaces as it is.
        if exc.name is None or not module_name.startswith(exc.name):
            raise
        raise DeclarationError(
            f"{what}: cannot import module {module_name!r} ({exc}); check the name and that "
            "the project is installed or its folder is on sys.path"
        ) from None
    try:
        return getattr(module, attribute)
    except AttributeError:
        raise DeclarationError(
            f"{what}: module {module_name!r} has no attribute {attribute!r}"
        ) from None


def resolve_tables(_context: dg.ResolutionContext, reference: str) -> list[StreamingTable]:
    value = load_object(reference, "tables")
    if isinstance(value, StreamingTable):
        value = [value]
    if isinstance(value, str | bytes) or not isinstance(value, Sequence) or not value or not all(
        isinstance(t, StreamingTable) for t in value
    ):
        raise DeclarationError(
            f"tables: {reference!r} is {_kind(value)}, not a non-empty list of StreamingTable; "
            "name the list of tables the project declares"
        )
    return list(value)


def resolve_assets(
    _context: dg.ResolutionContext, references: Sequence[str]
) -> list[AssetsDefinition | AssetSpec]:
    assets: list[AssetsDefinition | AssetSpec] = []
    for reference in references:
        value = load_object(reference, "assets")
        values = list(value) if isinstance(value, list | tuple) else [value]
        for item in values:
            if not isinstance(item, AssetsDefinition | AssetSpec):
                raise DeclarationError(
                    f"assets: {reference!r} is {_kind(item)}, not an asset (an @asset function "
                    "or an AssetSpec) or a list of them"
                )
            assets.append(item)
    return assets


def _kind(value: Any) -> str:
    return f"a {type(value).__name__}"


def build_resource(
    context: dg.ResolutionContext, resource: type[BaseModel], where: str, raw: BaseModel
) -> Any:
    """The resource from its YAML fields: templates rendered, secrets as EnvVars."""
    secrets = SECRET_FIELDS.get(resource, frozenset())
    values: dict[str, Any] = {}
    for name, value in known_fields(raw, resource, where).items():
        if name in secrets:
            values[name] = _secret(value, f"{where}.{name}")
        else:
            _refuse_unset_variable(value, f"{where}.{name}")
            values[name] = context.resolve_value(value)
    return resource(**values)


def _refuse_unset_variable(value: Any, where: str) -> None:
    """A field that is only "{{ env.NAME }}" with NAME unset would reach the resource as None
    (a type error that names neither the field nor the variable): say which to set."""
    match = _ENV_TEMPLATE.fullmatch(value.strip()) if isinstance(value, str) else None
    if match is None:
        return
    variable = match.group(1) or match.group(2)
    if variable not in os.environ:
        raise DeclarationError(
            f"{where}: the environment variable {variable} is not set; export it, or put "
            f"'{variable}=...' in the project's .env (dg reads it), or remove the field to keep "
            "its default (docs/configuration.md)"
        )


def _secret(value: Any, where: str) -> EnvVar | None:
    if value is None:
        return None
    match = _ENV_TEMPLATE.fullmatch(value.strip()) if isinstance(value, str) else None
    if match is None:
        # Never the value: it is the secret.
        raise DeclarationError(
            f"{where}: a secret is read from an environment variable; write "
            '"{{ env.VARIABLE_NAME }}" (a value in defs.yaml would be committed and shown in '
            "the UI)"
        )
    return EnvVar(match.group(1) or match.group(2))


def _resources_resolver(resource: type[BaseModel], key: str, description: str) -> dg.Resolver:
    def resolve(context: dg.ResolutionContext, raw: Mapping[str, BaseModel]) -> dict[str, Any]:
        return {name: build_resource(context, resource, f"{key}.{name}", settings)
                for name, settings in raw.items()}

    return dg.Resolver(
        resolve, model_field_type=dict[str, yaml_model(resource)], description=description
    )


def _resource_resolver(resource: type[BaseModel], key: str, description: str) -> dg.Resolver:
    def resolve(context: dg.ResolutionContext, raw: BaseModel) -> Any:
        return build_resource(context, resource, key, raw)

    return dg.Resolver(resolve, model_field_type=yaml_model(resource), description=description)


def _checks_config(raw: BaseModel, where: str) -> ChecksConfig:
    return ChecksConfig.model_validate(known_fields(raw, ChecksConfig, where))


def _checks(_context: dg.ResolutionContext, raw: BaseModel) -> ChecksConfig:
    return _checks_config(raw, "checks")


def _checks_per_table(_context: dg.ResolutionContext, raw: Mapping[str, BaseModel]
                      ) -> dict[str, ChecksConfig]:
    return {name: _checks_config(c, f"checks_per_table.{name}") for name, c in raw.items()}


class StreamingTablesScaffolder(dg.Scaffolder):
    """`dg scaffold defs stream_assets.StreamingTablesComponent NAME`: a defs.yaml to edit.

    It names the project's own `tables` module and the broker variable the resources read
    and docs/configuration.md lists (STREAM_ASSETS_KAFKA_BOOTSTRAP), so a project that
    follows docs/components.md loads as scaffolded.
    """

    def scaffold(self, request: dg.ScaffoldRequest) -> None:
        dg.scaffold_component(request, {
            "tables": f"{_root_module(request.project_root)}.tables:TABLES",
            "kafka": {"stream_source": {"bootstrap_servers": f"{{{{ env.{BOOTSTRAP_ENV} }}}}"}},
        })


def _root_module(project_root: Path | None) -> str:
    """The dg project's root module (pyproject.toml's [tool.dg.project]), else `my_project`."""
    if project_root is None:
        return "my_project"
    try:
        settings = tomllib.loads((project_root / "pyproject.toml").read_text())
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError):
        return "my_project"
    module = settings.get("tool", {}).get("dg", {}).get("project", {}).get("root_module")
    return module if isinstance(module, str) and module else "my_project"


@dg.scaffold_with(StreamingTablesScaffolder)
@dataclass
class StreamingTablesComponent(dg.Component, dg.Resolvable):
    """Streaming Delta tables fed by Kafka: the tables a module declares, with their sources,
    lake and Spark. Each table becomes its catch-up asset, checks, continuous job and sensors
    (stream_assets.build_definitions)."""

    # Resources and check configs are typed by their Dagster base class: Dagster refuses a
    # field whose pydantic type has constrained fields (its YAML type is the resolver's model).
    tables: Annotated[
        Sequence[StreamingTable],
        dg.Resolver(resolve_tables, model_field_type=str,
                    description="'module:attribute' of the list of StreamingTable to run, "
                    "e.g. 'my_project.tables:TABLES'."),
    ]
    assets: Annotated[
        Sequence[AssetsDefinition | AssetSpec],
        dg.Resolver(resolve_assets, model_field_type=list[str],
                    description="'module:attribute' of the project's other assets the tables "
                    "read (static sources), each an asset or a list of them."),
    ] = ()
    kafka: Annotated[
        Mapping[str, dg.ConfigurableResource],
        _resources_resolver(KafkaSource, "kafka",
                            "Kafka clusters by resource key (a kafka_topic's `resource`, "
                            "default 'stream_source'); unset: STREAM_ASSETS_KAFKA_BOOTSTRAP."),
    ] = field(default_factory=dict)
    event_hubs: Annotated[
        Mapping[str, dg.ConfigurableResource],
        _resources_resolver(EventHubsSource, "event_hubs",
                            "Event Hubs namespaces by resource key; connection_string as "
                            "\"{{ env.NAME }}\"."),
    ] = field(default_factory=dict)
    lake: Annotated[
        dg.ConfigurableResource | None,
        _resource_resolver(DeltaLake, "lake", "Where tables and checkpoints live; unset: "
                           "under STREAM_ASSETS_HOME."),
    ] = None
    spark: Annotated[
        dg.ConfigurableResource | None,
        _resource_resolver(SparkResource, "spark", "The Spark session (master, remote, "
                           "spark_config, ...); unset: local[*]."),
    ] = None
    checks: Annotated[
        dg.Config | None,
        dg.Resolver(_checks, model_field_type=yaml_model(ChecksConfig),
                    description="Thresholds of the derived asset checks, for every table."),
    ] = None
    checks_per_table: Annotated[
        Mapping[str, dg.Config],
        dg.Resolver(
            _checks_per_table,
            model_field_type=dict[str, yaml_model(ChecksConfig)],
            description="Thresholds of the derived asset checks for the named tables."),
    ] = field(default_factory=dict)

    def resources(self) -> dict[str, Any]:
        """What the YAML binds, on top of build_definitions' defaults."""
        bound: dict[str, Any] = {**self.kafka, **self.event_hubs}
        clash = sorted(set(self.kafka) & set(self.event_hubs))
        if clash:
            raise DeclarationError(f"kafka and event_hubs both bind {', '.join(clash)}; "
                                   "give each source its own resource key")
        if self.lake is not None:
            bound["lake"] = self.lake
        if self.spark is not None:
            bound["spark"] = self.spark
        return bound

    def build_defs(self, context: dg.ComponentLoadContext) -> dg.Definitions:
        return build_definitions(
            self.tables,
            resources=self.resources(),
            assets=self.assets,
            checks=self.checks,
            checks_per_table=self.checks_per_table or None,
        )
