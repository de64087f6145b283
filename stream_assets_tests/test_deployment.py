"""The docker compose deployment, checked without a Docker engine.

No engine runs where these tests run, so each file is checked by the tool that reads it, or the
nearest one that can: docker-compose.yml against the Compose Specification's JSON schema (the
copy vendored by check-jsonschema) and against the other files; the Dockerfile with
dockerfile-parse; the Dagster commands the containers run with Dagster's own click parsers;
deploy/workspace.yaml with Dagster's workspace schema; deploy/dagster.yaml with Dagster's
instance schema, and (integration) by Dagster against a real PostgreSQL that
scripts/ensure-postgres.sh installs and starts on this machine.
"""

from __future__ import annotations

import importlib
import json
import os
import re
import secrets
import shlex
import shutil
import subprocess
import tomllib
from collections.abc import Iterator, Mapping
from importlib.metadata import entry_points
from pathlib import Path, PurePosixPath
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
COMPOSE_FILE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"
DAGSTER_YAML = ROOT / "deploy" / "dagster.yaml"
WORKSPACE_YAML = ROOT / "deploy" / "workspace.yaml"
ENSURE_POSTGRES = ROOT / "scripts" / "ensure-postgres.sh"

APP_SERVICES = ("code", "webserver", "daemon")
TOPICS = {"events", "impressions", "clicks"}  # the demo's topics (stream_assets/schemas.py)
LOOPBACK = "127.0.0.1"
# What a user's .env must provide for `docker compose config` to succeed; a dummy value here.
REQUIRED_ENV = {"DAGSTER_POSTGRES_PASSWORD": "not-a-real-password"}
ENSURE_POSTGRES_CANNOT = 77  # the script's "this machine cannot provide PostgreSQL"


# ---------------------------------------------------------------------------------------------
# Compose variable interpolation, as `docker compose` applies it before validating the file.
# ---------------------------------------------------------------------------------------------
class MissingRequiredVariable(ValueError):
    pass


_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def _substitute(expr: str, env: Mapping[str, str]) -> str:
    """One `${...}` body: NAME, NAME:-default, NAME-default, NAME:?err, NAME?err, NAME:+alt."""
    match = _NAME.match(expr)
    if match is None:
        raise ValueError(f"invalid interpolation ${{{expr}}}")
    name, rest = match.group(), expr[match.end():]
    value = env.get(name)
    if rest == "":
        return value or ""
    for op in (":-", ":?", ":+", "-", "?", "+"):
        if rest.startswith(op):
            arg = interpolate_string(rest[len(op):], env)
            is_set = value is not None if len(op) == 1 else bool(value)
            if op.endswith("-"):
                return value if is_set else arg  # type: ignore[return-value]
            if op.endswith("?"):
                if not is_set:
                    raise MissingRequiredVariable(f"{name}: {arg}")
                return value  # type: ignore[return-value]
            return arg if is_set else ""
    raise ValueError(f"unsupported interpolation ${{{expr}}}")


def interpolate_string(text: str, env: Mapping[str, str]) -> str:
    out: list[str] = []
    i = 0
    while i < len(text):
        char = text[i]
        if char != "$":
            out.append(char)
            i += 1
            continue
        nxt = text[i + 1] if i + 1 < len(text) else ""
        if nxt == "$":  # `$$` is a literal dollar, left for the container's shell
            out.append("$")
            i += 2
        elif nxt == "{":
            depth, j = 1, i + 2
            while j < len(text) and depth:
                depth += {"{": 1, "}": -1}.get(text[j], 0)
                j += 1
            if depth:
                raise ValueError(f"unclosed ${{ in {text!r}")
            out.append(_substitute(text[i + 2 : j - 1], env))
            i = j
        elif (match := _NAME.match(text, i + 1)) is not None:
            out.append(env.get(match.group(), ""))
            i = match.end()
        else:
            out.append("$")
            i += 1
    return "".join(out)


def interpolate(node: Any, env: Mapping[str, str]) -> Any:
    """Values only, as Compose does: keys and non-strings are left alone."""
    if isinstance(node, str):
        return interpolate_string(node, env)
    if isinstance(node, dict):
        return {key: interpolate(value, env) for key, value in node.items()}
    if isinstance(node, list):
        return [interpolate(value, env) for value in node]
    return node


def test_interpolation_follows_compose_rules() -> None:
    env = {"SET": "v", "EMPTY": ""}
    assert interpolate_string("a ${SET} $SET $$SET $${SET}", env) == "a v v $SET ${SET}"
    assert interpolate_string("${UNSET:-d} ${EMPTY:-d} ${EMPTY-d} ${SET:+alt}", env) == "d d  alt"
    assert interpolate_string("${UNSET:-${SET}}", env) == "v"
    with pytest.raises(MissingRequiredVariable, match="UNSET: why"):
        interpolate_string("${UNSET:?why}", env)


# ---------------------------------------------------------------------------------------------
# Loaded files
# ---------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def compose_raw() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE_FILE.read_text())


@pytest.fixture(scope="module")
def compose(compose_raw: dict[str, Any]) -> dict[str, Any]:
    """The file as the engine would see it with only the required variables set."""
    clean_env = {k: v for k, v in os.environ.items() if not k.startswith(("DAGSTER_", "KAFKA_"))}
    return interpolate(compose_raw, {**clean_env, **REQUIRED_ENV})


@pytest.fixture(scope="module")
def services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return compose["services"]


@pytest.fixture(scope="module")
def dockerfile():
    from dockerfile_parse import DockerfileParser

    return DockerfileParser(path=str(DOCKERFILE), cache_content=True)


@pytest.fixture(scope="module")
def stages(dockerfile) -> list[list[dict[str, Any]]]:
    """The Dockerfile's instructions, one list per FROM."""
    out: list[list[dict[str, Any]]] = []
    for item in dockerfile.structure:
        if item["instruction"] == "FROM":
            out.append([])
        if item["instruction"] != "COMMENT":
            assert out, "the Dockerfile has an instruction before its first FROM"
            out[-1].append(item)
    return out


@pytest.fixture(scope="module")
def image_env(dockerfile) -> dict[str, str]:
    """ENV of the final stage, i.e. what every container of the project image starts with."""
    return dict(dockerfile.envs)


@pytest.fixture(scope="module")
def workspace() -> dict[str, Any]:
    return yaml.safe_load(WORKSPACE_YAML.read_text())


@pytest.fixture(scope="module")
def dagster_yaml() -> dict[str, Any]:
    return yaml.safe_load(DAGSTER_YAML.read_text())


def environment(service: Mapping[str, Any]) -> dict[str, Any]:
    env = service.get("environment") or {}
    if isinstance(env, list):  # `- NAME=value` / `- NAME` form
        return dict(item.split("=", 1) if "=" in item else (item, None) for item in env)
    return dict(env)


def published_ports(service: Mapping[str, Any]) -> list[dict[str, str]]:
    """Both port syntaxes as {host_ip, published, target}."""
    out = []
    for port in service.get("ports", []):
        if isinstance(port, dict):
            out.append({"host_ip": str(port.get("host_ip", "")),
                        "published": str(port.get("published", "")),
                        "target": str(port["target"])})
            continue
        parts = str(port).split("/")[0].rsplit(":", 2)
        host_ip, published, target = ([""] * (3 - len(parts)) + parts)
        out.append({"host_ip": host_ip, "published": published, "target": target})
    return out


def mounts(service: Mapping[str, Any]) -> dict[str, str]:
    """Mount target -> source for both volume syntaxes."""
    out = {}
    for volume in service.get("volumes", []):
        if isinstance(volume, dict):
            out[volume["target"]] = volume.get("source", "")
        else:
            source, target = str(volume).split(":")[:2]
            out[target] = source
    return out


def env_references(node: Any) -> set[str]:
    """Names used as `{env: NAME}` anywhere in a Dagster config document."""
    if isinstance(node, dict):
        if set(node) == {"env"}:
            return {node["env"]}
        return set().union(*(env_references(v) for v in node.values()))
    if isinstance(node, list):
        return set().union(*(env_references(v) for v in node))
    return set()


def command_args(command: Any) -> list[str]:
    """A compose `command`/`test`, or a Dockerfile CMD as dockerfile-parse gives it (JSON)."""
    if isinstance(command, list):
        return list(command)
    if command.lstrip().startswith("["):
        return json.loads(command)
    return shlex.split(command)


def option(args: list[str], *names: str) -> str:
    for i, arg in enumerate(args):
        if arg in names:
            return args[i + 1]
    raise AssertionError(f"none of {names} in {args}")


def parse_console_command(args: list[str]):
    """Parse a command line with the click command behind its console script, running nothing.

    Fails on unknown commands, unknown options and values of the wrong type, for the Dagster
    version installed here, which is the one the image installs from the same pins."""
    import click

    scripts = {ep.name: ep for ep in entry_points(group="console_scripts")}
    assert args[0] in scripts, f"{args[0]} is not a console script of this environment"
    module = importlib.import_module(scripts[args[0]].value.split(":")[0])
    command: click.Command = module.cli
    rest = args[1:]
    parent = None
    while isinstance(command, click.Group):
        ctx = click.Context(command, info_name=args[0], parent=parent)
        sub = command.get_command(ctx, rest[0]) if rest else None
        assert sub is not None, f"no subcommand {rest[:1]} in {args}"
        command, rest, parent = sub, rest[1:], ctx
    return command.make_context(command.name, list(rest), parent=parent)


# ---------------------------------------------------------------------------------------------
# 1. docker-compose.yml against the Compose Specification
# ---------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def compose_validator():
    import jsonschema
    from check_jsonschema.builtin_schemas import get_builtin_schema

    # The schema of github.com/compose-spec/compose-spec, vendored in check-jsonschema's wheel.
    schema = get_builtin_schema("vendor.compose-spec")
    assert schema.get("title") == "Compose Specification"
    cls = jsonschema.validators.validator_for(schema)
    cls.check_schema(schema)
    return cls(schema, format_checker=cls.FORMAT_CHECKER)


def _schema_errors(validator, document) -> list[str]:
    return [
        f"{'/'.join(map(str, error.absolute_path)) or '<root>'}: {error.message}"
        for error in validator.iter_errors(document)
    ]


def test_compose_file_matches_compose_specification(compose_validator, compose_raw, compose):
    # As written (with ${...} still in it) and as the engine sees it after interpolation.
    assert _schema_errors(compose_validator, compose_raw) == []
    assert _schema_errors(compose_validator, compose) == []


def test_compose_schema_check_is_not_vacuous(compose_validator, compose):
    broken = yaml.safe_load(yaml.safe_dump(compose))
    broken["services"]["code"]["depends_onn"] = broken["services"]["code"].pop("depends_on")
    broken["services"]["topics"]["depends_on"]["kafka"]["condition"] = "service_ready"
    errors = _schema_errors(compose_validator, broken)
    assert any("depends_onn" in e for e in errors), errors
    assert any("service_ready" in e for e in errors), errors


# ---------------------------------------------------------------------------------------------
# 2. Cross-checks between the compose file, the image and the Dagster config
# ---------------------------------------------------------------------------------------------
def test_project_image_is_built_from_the_dockerfile_by_every_service_using_it(services):
    project_image = services["code"]["image"]
    users = {name for name, s in services.items() if s.get("image") == project_image}
    assert users == set(APP_SERVICES)
    for name in APP_SERVICES:
        build = services[name].get("build")
        assert isinstance(build, dict), f"{name} uses the project image but has no build"
        assert (ROOT / build["context"]).resolve() == ROOT
        assert (ROOT / build["context"] / build.get("dockerfile", "Dockerfile")) == DOCKERFILE
    # One image, one build: Compose builds it once only if the definitions are identical.
    assert len({repr(services[name]["build"]) for name in APP_SERVICES}) == 1
    others = {name: s for name, s in services.items() if name not in APP_SERVICES}
    assert all("build" not in s and s.get("image") for s in others.values()), others


def test_compose_kafka_runs_the_broker_version_the_project_tests_against(services):
    """The broker in compose is the one `stream-assets kafka` runs here, so tests speak for it."""
    import xml.etree.ElementTree as ET

    pom = ET.parse(ROOT / "jvm" / "kafka" / "pom.xml").getroot()
    ns = {"m": "http://maven.apache.org/POM/4.0.0"}
    version = pom.find("m:properties/m:kafka.version", ns).text
    kafka_images = {s["image"] for s in services.values() if s["image"].startswith("apache/kafka")}
    assert kafka_images == {f"apache/kafka:{version}"}


def test_dagster_yaml_env_vars_reach_every_dagster_process(services, dagster_yaml, compose):
    needed = env_references(dagster_yaml)
    assert {"DAGSTER_POSTGRES_PASSWORD", "DAGSTER_POSTGRES_HOST"} <= needed
    values = []
    for name in APP_SERVICES:
        env = environment(services[name])
        missing = needed - env.keys()
        assert not missing, f"{name} lacks {sorted(missing)}, which deploy/dagster.yaml reads"
        assert all(env[k] not in (None, "") for k in needed), f"{name}: empty Postgres settings"
        values.append({k: env[k] for k in needed})
    assert all(v == values[0] for v in values), "the three services must share one database"

    # ...and they name the compose Postgres, with the credentials it was initialised with.
    dagster_env, postgres = values[0], environment(services["postgres"])
    assert dagster_env["DAGSTER_POSTGRES_HOST"] in services
    assert services[dagster_env["DAGSTER_POSTGRES_HOST"]]["image"].startswith("postgres:")
    assert str(dagster_env["DAGSTER_POSTGRES_PORT"]) == "5432"
    assert dagster_env["DAGSTER_POSTGRES_USER"] == postgres["POSTGRES_USER"]
    assert dagster_env["DAGSTER_POSTGRES_DB"] == postgres["POSTGRES_DB"]
    assert dagster_env["DAGSTER_POSTGRES_PASSWORD"] == postgres["POSTGRES_PASSWORD"]


def test_secrets_come_from_the_user_environment(compose_raw, services):
    # The password has no default: without it the file does not even interpolate.
    env_without_password = {k: v for k, v in os.environ.items() if k != "DAGSTER_POSTGRES_PASSWORD"}
    with pytest.raises(MissingRequiredVariable, match="DAGSTER_POSTGRES_PASSWORD"):
        interpolate(compose_raw, env_without_password)
    raw_password_values = [
        environment(s).get(key)
        for s in compose_raw["services"].values()
        for key in ("DAGSTER_POSTGRES_PASSWORD", "POSTGRES_PASSWORD")
        if key in environment(s)
    ]
    assert raw_password_values
    assert all(v.startswith("${DAGSTER_POSTGRES_PASSWORD:?") for v in raw_password_values)

    # Optional secrets: passed through by name (no value in the file), to `code` only, where the
    # code that needs them (runs, sensors) executes.
    for secret in ("EVENTHUB_CONNECTION_STRING", "ALERT_WEBHOOK_URL"):
        holders = {name for name, s in services.items() if secret in environment(s)}
        assert holders == {"code"}, (secret, holders)
        assert environment(compose_raw["services"]["code"])[secret] is None

    ignored = dockerignore_patterns()
    assert is_ignored(".env", ignored), ".env must never be sent to the image build"


def test_ports_are_published_on_loopback_only(services):
    published = {name: published_ports(s) for name, s in services.items()}
    for name, ports in published.items():
        for port in ports:
            assert port["host_ip"] == LOOPBACK, f"{name} publishes {port} beyond {LOOPBACK}"
    assert {name for name, ports in published.items() if ports} == {"kafka", "webserver"}
    assert published["webserver"] == [{"host_ip": LOOPBACK, "published": "3000", "target": "3000"}]


def _listeners(value: str) -> dict[str, tuple[str, str]]:
    """`NAME://host:port,...` -> {NAME: (host, port)}."""
    out = {}
    for item in value.split(","):
        name, address = item.split("://")
        host, _, port = address.rpartition(":")
        out[name] = (host, port)
    return out


def test_kafka_listeners_fit_the_published_port_and_the_clients(services):
    kafka_env = environment(services["kafka"])
    listeners = _listeners(kafka_env["KAFKA_LISTENERS"])
    advertised = _listeners(kafka_env["KAFKA_ADVERTISED_LISTENERS"])
    protocol_map = kafka_env["KAFKA_LISTENER_SECURITY_PROTOCOL_MAP"]
    protocols = dict(p.split(":") for p in protocol_map.split(","))
    assert set(listeners) == set(protocols)
    assert kafka_env["KAFKA_PROCESS_ROLES"] == "broker,controller"  # KRaft, no ZooKeeper
    assert kafka_env["CLUSTER_ID"]

    # The host reaches the EXTERNAL listener through the published port, and is told to come
    # back to the same loopback address and port (the project's default bootstrap).
    (port,) = published_ports(services["kafka"])
    external = next(n for n, (_, p) in listeners.items() if p == port["target"])
    assert advertised[external] == (LOOPBACK, port["published"]) == (LOOPBACK, "9092")

    # Containers use the internal listener, under the service's name.
    bootstrap = {environment(services[n])["STREAM_ASSETS_KAFKA_BOOTSTRAP"] for n in APP_SERVICES}
    assert len(bootstrap) == 1
    host, _, bport = bootstrap.pop().rpartition(":")
    assert host == "kafka" and kafka_env["KAFKA_INTER_BROKER_LISTENER_NAME"] in advertised
    assert (host, bport) in advertised.values()
    assert listeners[next(n for n, a in advertised.items() if a == (host, bport))][1] == bport

    # Data on the named volume, not in the container's /tmp.
    assert mounts(services["kafka"])[kafka_env["KAFKA_LOG_DIRS"]] == "kafka_data"


def test_topics_service_creates_the_project_topics(services):
    topics = services["topics"]
    assert set(environment(topics)["TOPICS"].split()) == TOPICS
    assert topics["image"] == services["kafka"]["image"]
    script = "\n".join(command_args(topics["command"]))
    assert "--create --if-not-exists" in script and "kafka:9092" in script
    assert topics.get("restart") == "no"


def test_volumes_are_declared_and_shared(compose, services, image_env):
    declared = set(compose.get("volumes") or {})
    used = {
        source
        for s in services.values()
        for source in mounts(s).values()
        if source and not source.startswith((".", "/", "~"))
    }
    assert used == declared, f"used {sorted(used)} vs declared {sorted(declared)}"

    home = image_env["STREAM_ASSETS_HOME"]
    dagster_storage = str(PurePosixPath(image_env["DAGSTER_HOME"]) / "storage")
    jars = PurePosixPath(image_env["STREAM_ASSETS_JARS"])
    for name in APP_SERVICES:
        m = mounts(services[name])
        assert m.get(home) == "stream_assets_home", f"{name} must mount STREAM_ASSETS_HOME"
        assert m.get(dagster_storage) == "dagster_storage", f"{name} must share compute logs"
        # A volume mounted over the jars would hide them: they are baked into the image.
        for target in m:
            assert not jars.is_relative_to(PurePosixPath(target)), (name, target)
    assert mounts(services["postgres"]).get("/var/lib/postgresql/data") == "postgres_data"


def test_long_running_services_have_healthchecks(services):
    for name, service in services.items():
        if service.get("restart") == "no":  # one-shot jobs are waited on by exit code instead
            continue
        check = service.get("healthcheck")
        assert check and not check.get("disable"), f"{name} has no healthcheck"
        test = command_args(check["test"])
        assert test[0] in ("CMD", "CMD-SHELL") and len(test) > 1, (name, test)


def test_depends_on_waits_for_readiness(services):
    for name, service in services.items():
        deps = service.get("depends_on") or {}
        assert isinstance(deps, dict), f"{name}: use depends_on with conditions, not a list"
        for target, spec in deps.items():
            assert target in services, (name, target)
            condition = spec.get("condition")
            if condition == "service_healthy":
                assert services[target].get("healthcheck"), (name, target)
            elif condition == "service_completed_successfully":
                assert services[target].get("restart") == "no", (name, target)
            else:
                raise AssertionError(f"{name} -> {target}: condition {condition!r}")
    for name in ("webserver", "daemon"):
        deps = services[name]["depends_on"]
        assert deps["code"]["condition"] == "service_healthy"
        assert deps["postgres"]["condition"] == "service_healthy"
    code = services["code"]["depends_on"]
    assert code["postgres"]["condition"] == "service_healthy"
    assert code["topics"]["condition"] == "service_completed_successfully"
    assert services["topics"]["depends_on"]["kafka"]["condition"] == "service_healthy"

    # No cycle: Compose would refuse to start.
    seen: dict[str, int] = {}

    def visit(node: str) -> None:
        assert seen.get(node) != 1, f"depends_on cycle through {node}"
        if seen.get(node) == 2:
            return
        seen[node] = 1
        for dep in services[node].get("depends_on") or {}:
            visit(dep)
        seen[node] = 2

    for name in services:
        visit(name)


def test_workspace_points_at_the_code_server(workspace, services):
    from dagster._core.workspace.config_schema import process_workspace_config

    result = process_workspace_config(workspace)
    assert result.success, result.errors
    (entry,) = workspace["load_from"]
    grpc = entry["grpc_server"]
    assert grpc["host"] == "code" and grpc["host"] in services
    assert grpc["location_name"] == "stream_assets"
    code = services["code"]
    assert str(grpc["port"]) in [str(p) for p in code.get("expose", [])]
    health_args = command_args(code["healthcheck"]["test"])[1:]
    assert option(health_args, "-p", "--port") == str(grpc["port"])


def test_dagster_commands_parse_with_the_installed_dagster(services, dockerfile, image_env):
    # What each container runs, including its healthcheck, parsed by Dagster's own CLI.
    # Click checks that a workspace file exists: point it at the file the image copies there.
    in_image = {str(PurePosixPath(image_env["DAGSTER_HOME"]) / "workspace.yaml"): WORKSPACE_YAML}
    parse_console_command(command_args(dockerfile.cmd))
    for name in ("webserver", "daemon"):
        args = command_args(services[name]["command"])
        parse_console_command([str(in_image.get(a, a)) for a in args])
    for name in ("code", "daemon"):
        parse_console_command(command_args(services[name]["healthcheck"]["test"])[1:])
    # The webserver's healthcheck asks its HTTP info endpoint.
    test = " ".join(command_args(services["webserver"]["healthcheck"]["test"]))
    assert "http://127.0.0.1:3000/server_info" in test


# ---------------------------------------------------------------------------------------------
# 3. deploy/dagster.yaml, by Dagster: schema here, a real Postgres in the integration test
# ---------------------------------------------------------------------------------------------
def _set_dummy_postgres_env(monkeypatch, dagster_yaml) -> None:
    for name in env_references(dagster_yaml):
        monkeypatch.setenv(name, "5432" if name.endswith("_PORT") else "x")


def test_dagster_yaml_is_a_valid_instance_config(tmp_path, monkeypatch, dagster_yaml):
    from dagster._config import process_config
    from dagster._core.instance.ref import InstanceRef
    from dagster._serdes.config_class import class_from_code_pointer

    _set_dummy_postgres_env(monkeypatch, dagster_yaml)
    shutil.copy(DAGSTER_YAML, tmp_path / "dagster.yaml")
    ref = InstanceRef.from_dir(str(tmp_path))  # validates the whole file against the schema

    configured = {
        "storage": ref.storage_data,
        "run_coordinator": ref.run_coordinator_data,
        "run_launcher": ref.run_launcher_data,
        "compute_logs": ref.compute_logs_data,
    }
    for key, data in configured.items():
        klass = class_from_code_pointer(data.module_name, data.class_name)
        result = process_config(klass.config_type(), yaml.safe_load(data.config_yaml) or {})
        assert result.success, (key, result.errors)

    assert ref.storage_data.module_name == "dagster_postgres"
    assert ref.storage_data.class_name == "DagsterPostgresStorage"
    assert ref.run_launcher_data.class_name == "DefaultRunLauncher"
    assert ref.run_coordinator_data.class_name == "QueuedRunCoordinator"
    # Pools and the run limit both live under `concurrency` (Dagster refuses the run limit in
    # the coordinator's config beside pools); one slot per query's pool, claimed inside runs.
    concurrency = ref.settings["concurrency"]
    assert concurrency["runs"]["max_concurrent_runs"] >= 1
    assert concurrency["pools"] == {"granularity": "op", "default_limit": 1}
    assert ref.settings["run_monitoring"]["free_slots_after_run_end_seconds"] > 0
    assert ref.settings["telemetry"] == {"enabled": False}
    # Compute logs land in $DAGSTER_HOME/storage: the shared `dagster_storage` volume.
    compute_logs_dir = yaml.safe_load(ref.compute_logs_data.config_yaml)["base_dir"]
    assert compute_logs_dir == str(tmp_path / "storage")

    # Credentials only by reference: no literal host, user or password in the file.
    postgres_db = dict(dagster_yaml["storage"]["postgres"]["postgres_db"])
    assert "postgres_url" not in dagster_yaml["storage"]["postgres"]
    scheme = postgres_db.pop("scheme", "postgresql")
    assert all(set(v) == {"env"} for v in postgres_db.values()), postgres_db

    # The driver SQLAlchemy will load for that scheme is installed (a bare `postgresql` means
    # psycopg 3 under SQLAlchemy 2.1, while dagster-postgres brings psycopg2).
    from sqlalchemy.engine import make_url

    make_url(f"{scheme}://u@h/d").get_dialect().import_dbapi()


# ---------------------------------------------------------------------------------------------
# 4. The Dockerfile and its agreement with the compose file
# ---------------------------------------------------------------------------------------------
def test_dockerfile_stages(stages):
    froms = [stage[0]["value"].split() for stage in stages]
    assert [f[0] for f in froms] == ["python:3.11-slim-bookworm"] * 2
    requires = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["requires-python"]
    assert ">=3.11" in requires and "<3.12" in requires  # the base image's Python fits the pins
    build, runtime = stages
    build_runs = " ".join(i["value"] for i in build if i["instruction"] == "RUN")
    runtime_runs = " ".join(i["value"] for i in runtime if i["instruction"] == "RUN")
    assert "maven" in build_runs and "maven" not in runtime_runs
    assert "openjdk-17-jre-headless" in runtime_runs  # Spark needs Java 17 where runs execute
    assert "jars.resolve('spark'" in build_runs
    # The event parser's jar is compiled in the image (jvm/udf), so the build stage has a JDK.
    assert "jars.resolve('udf')" in build_runs and "openjdk-17-jdk-headless" in build_runs
    assert 'pip install ".[deploy]"' in build_runs
    copies_from_build = [i["value"] for i in runtime if i["instruction"] == "COPY"
                         and i["value"].startswith("--from=build")]
    assert any("/opt/stream_assets/jars" in c for c in copies_from_build)


def test_image_runs_as_non_root_without_entrypoint(stages, dockerfile):
    runtime = stages[-1]
    users = [i["value"].strip() for i in runtime if i["instruction"] == "USER"]
    assert users and users[-1] not in ("root", "0", "0:0")
    # No ENTRYPOINT: a compose `command` then replaces the CMD whole (webserver, daemon).
    assert not any(i["instruction"] == "ENTRYPOINT" for stage in stages for i in stage)
    assert dockerfile.cmd.lstrip().startswith("["), "CMD in exec form: signals reach Dagster"


def test_cmd_and_expose_agree_with_compose_and_workspace(dockerfile, services, workspace):
    cmd = command_args(dockerfile.cmd)
    assert cmd[:3] == ["dagster", "code-server", "start"]
    assert option(cmd, "-h", "--host") == "0.0.0.0"
    module = option(cmd, "-m", "--module-name")
    assert module == "stream_assets.definitions"
    assert (ROOT / (module.replace(".", "/") + ".py")).is_file()
    grpc_port = option(cmd, "-p", "--port")
    assert grpc_port == str(workspace["load_from"][0]["grpc_server"]["port"])
    assert "command" not in services["code"], "code runs the image's CMD"

    exposed = {
        p.split("/")[0]
        for i in dockerfile.structure if i["instruction"] == "EXPOSE"
        for p in i["value"].split()
    }
    web = command_args(services["webserver"]["command"])
    assert option(web, "-h", "--host") == "0.0.0.0"  # the mapping, not the bind, limits access
    web_port = option(web, "-p", "--port")
    assert {grpc_port, web_port} <= exposed
    assert published_ports(services["webserver"])[0]["target"] == web_port


def test_image_paths_agree_with_compose(dockerfile, stages, image_env, services, workspace):
    dagster_home = PurePosixPath(image_env["DAGSTER_HOME"])
    home = PurePosixPath(image_env["STREAM_ASSETS_HOME"])
    jars = PurePosixPath(image_env["STREAM_ASSETS_JARS"])
    assert not jars.is_relative_to(home), "a volume on STREAM_ASSETS_HOME would hide the jars"
    copies = [i["value"].split() for i in stages[-1] if i["instruction"] == "COPY"]
    assert ["deploy/dagster.yaml", "deploy/workspace.yaml", f"{dagster_home}/"] in copies
    for name in ("webserver", "daemon"):
        args = command_args(services[name]["command"])
        assert option(args, "-w", "--workspace") == str(dagster_home / "workspace.yaml")


def dockerignore_patterns() -> list[tuple[bool, re.Pattern[str]]]:
    """(.dockerignore) -> [(is_exception, regex)], in file order; the last match decides."""
    out = []
    for line in DOCKERIGNORE.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        negate = line.startswith("!")
        pattern = line.lstrip("!").strip("/")
        regex = ""
        i = 0
        while i < len(pattern):
            if pattern.startswith("**/", i):
                regex, i = regex + "(?:.*/)?", i + 3
            elif pattern.startswith("**", i):
                regex, i = regex + ".*", i + 2
            elif pattern[i] == "*":
                regex, i = regex + "[^/]*", i + 1
            elif pattern[i] == "?":
                regex, i = regex + "[^/]", i + 1
            elif pattern[i] == "[":
                end = pattern.index("]", i)
                regex, i = regex + pattern[i : end + 1], end + 1
            else:
                regex, i = regex + re.escape(pattern[i]), i + 1
        out.append((negate, re.compile(regex + "$")))
    return out


def is_ignored(path: str, patterns: list[tuple[bool, re.Pattern[str]]]) -> bool:
    """Docker's rule: a pattern matching a path or any of its parent folders applies to it."""
    parts = path.strip("/").split("/")
    candidates = ["/".join(parts[: n + 1]) for n in range(len(parts))]
    ignored = False
    for negate, regex in patterns:
        if any(regex.match(c) for c in candidates):
            ignored = not negate
    return ignored


def test_build_context_sends_what_copy_needs_and_nothing_private(stages):
    patterns = dockerignore_patterns()
    sources = []
    for stage in stages:
        for item in stage:
            if item["instruction"] != "COPY" or item["value"].startswith("--from="):
                continue
            args = [a for a in item["value"].split() if not a.startswith("--")]
            sources += args[:-1]
    assert "deploy/dagster.yaml" in sources
    for source in sources:
        if source == ".":
            continue
        assert (ROOT / source).exists(), f"COPY {source}: not in the repository"
        assert not is_ignored(source, patterns), f"COPY {source}: excluded by .dockerignore"
    for private in (".env", ".venv/bin/python", ".stream_assets/tables/x", ".git/config",
                    "stream_assets_tests/test_deployment.py", "stream_assets/__pycache__/a.pyc"):
        assert is_ignored(private, patterns), f"{private} would be sent to the builder"
    for needed in ("stream_assets/definitions.py", "jvm/spark/pom.xml", "pyproject.toml"):
        assert not is_ignored(needed, patterns), needed


# ---------------------------------------------------------------------------------------------
# Integration: deploy/dagster.yaml loaded by Dagster against a real local PostgreSQL
# ---------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def local_postgres() -> Iterator[dict[str, str]]:
    """A role and a throw-away database on 127.0.0.1, named through the yaml's variables."""
    pytest.importorskip("dagster_postgres", reason="install the `deploy` extra")
    settings = {
        "DAGSTER_POSTGRES_HOST": "127.0.0.1",
        "DAGSTER_POSTGRES_PORT": os.environ.get("STREAM_ASSETS_TEST_PGPORT", "5432"),
        "DAGSTER_POSTGRES_USER": "stream_assets_test",
        "DAGSTER_POSTGRES_DB": f"stream_assets_deploy_test_{os.getpid()}",
        # Random per session: nothing to keep secret, nothing hard-coded either.
        "DAGSTER_POSTGRES_PASSWORD": secrets.token_urlsafe(24),
    }
    result = subprocess.run(
        ["bash", str(ENSURE_POSTGRES)], env={**os.environ, **settings},
        capture_output=True, text=True, timeout=900, stdin=subprocess.DEVNULL,
    )
    if result.returncode == ENSURE_POSTGRES_CANNOT:
        pytest.skip(f"no local PostgreSQL: {result.stderr.strip()}")
    assert result.returncode == 0, result.stderr
    yield settings

    import psycopg2
    from psycopg2 import sql

    conn = psycopg2.connect(
        host=settings["DAGSTER_POSTGRES_HOST"], port=settings["DAGSTER_POSTGRES_PORT"],
        user=settings["DAGSTER_POSTGRES_USER"], password=settings["DAGSTER_POSTGRES_PASSWORD"],
        dbname="postgres",
    )
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(
            sql.Identifier(settings["DAGSTER_POSTGRES_DB"])))
    conn.close()


@pytest.mark.integration
def test_instance_from_deploy_config_stores_runs_in_postgres(local_postgres, tmp_path, monkeypatch):
    import psycopg2
    from dagster import AssetKey, DagsterInstance, DagsterRunStatus, asset, materialize
    from dagster._core.launcher import DefaultRunLauncher
    from dagster._core.run_coordinator import QueuedRunCoordinator
    from dagster_postgres import (
        PostgresEventLogStorage,
        PostgresRunStorage,
        PostgresScheduleStorage,
    )

    for name, value in local_postgres.items():
        monkeypatch.setenv(name, value)
    shutil.copy(DAGSTER_YAML, tmp_path / "dagster.yaml")

    @asset
    def deploy_probe() -> int:
        return 42

    instance = DagsterInstance.from_config(str(tmp_path))
    reader = None
    try:
        assert isinstance(instance.run_storage, PostgresRunStorage)
        assert isinstance(instance.event_log_storage, PostgresEventLogStorage)
        assert isinstance(instance.schedule_storage, PostgresScheduleStorage)
        assert isinstance(instance.run_launcher, DefaultRunLauncher)
        assert isinstance(instance.run_coordinator, QueuedRunCoordinator)
        # The run limit lives beside the pools (Dagster refuses it in both places).
        expected_max = yaml.safe_load(DAGSTER_YAML.read_text())["concurrency"]["runs"][
            "max_concurrent_runs"]
        # What the queue daemon applies: the instance's concurrency settings merged over the
        # run coordinator's own.
        queue = instance.get_concurrency_config().run_queue_config
        assert queue is not None and queue.max_concurrent_runs == expected_max
        assert not instance.telemetry_enabled
        assert instance.run_monitoring_enabled

        result = materialize([deploy_probe], instance=instance)
        assert result.success

        # A second instance from the same file, as another container would load it, sees it.
        reader = DagsterInstance.from_config(str(tmp_path))
        run = reader.get_run_by_id(result.run_id)
        assert run is not None and run.status == DagsterRunStatus.SUCCESS
        event = reader.get_latest_materialization_event(AssetKey("deploy_probe"))
        assert event is not None and event.run_id == result.run_id
        assert reader.all_instigator_state() == []  # schedule storage answers, and is empty
    finally:
        instance.dispose()
        if reader is not None:
            reader.dispose()

    # And the rows are in the database the variables name, not in some local fallback.
    conn = psycopg2.connect(
        host=local_postgres["DAGSTER_POSTGRES_HOST"], port=local_postgres["DAGSTER_POSTGRES_PORT"],
        user=local_postgres["DAGSTER_POSTGRES_USER"],
        password=local_postgres["DAGSTER_POSTGRES_PASSWORD"],
        dbname=local_postgres["DAGSTER_POSTGRES_DB"],
    )
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT status FROM runs WHERE run_id = %s", (result.run_id,))
            assert cur.fetchall() == [("SUCCESS",)]
            cur.execute("SELECT count(*) FROM event_logs WHERE run_id = %s", (result.run_id,))
            assert cur.fetchone()[0] > 0
    finally:
        conn.close()
