"""StreamingTablesComponent: a dg project adds streams with a defs.yaml and no Python wiring.

The real `dg` CLI checks and lists a temporary project that uses the component; its definitions
then materialize a table from the real broker (through its SASL listener, the password only
named in the YAML as an environment variable) into Delta with real Spark. A wrong YAML fails at
load with a message that says what to fix.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import dagster as dg
import pytest

from stream_assets import StreamingTablesComponent
from stream_assets.dev.generator import GOOD, generate_events
from stream_assets.dev.producer import produce
from stream_assets.resources import kafka
from stream_assets.resources.kafka import KafkaConnection

ROOT = Path(__file__).resolve().parents[1]
VENV = Path(sys.executable).parent.parent
DG = Path(sys.executable).parent / "dg"
BOOTSTRAP_ENV = "STREAM_ASSETS_TEST_COMPONENT_BOOTSTRAP"
PASSWORD_ENV = "STREAM_ASSETS_TEST_COMPONENT_PASSWORD"
COMPONENTS_DOC = ROOT / "docs" / "components.md"
CONFIGURATION_DOC = ROOT / "docs" / "configuration.md"
ENV_NAME = re.compile(r"\{\{\s*env\.([A-Za-z_]\w*)\s*\}\}")
# What `create-dagster project my-project` (1.13) writes, as docs/components.md starts from.
CREATE_DAGSTER_PYPROJECT = """\
[project]
name = "my_project"
requires-python = ">=3.10,<3.15"
version = "0.1.0"
dependencies = [
    "dagster",
]

[dependency-groups]
dev = [
    "dagster-dg-cli",
    "dagster-webserver",
]

[build-system]
requires = ["hatchling"]
build-backend = "hatchling.build"

[tool.dg]
directory_type = "project"

[tool.dg.project]
root_module = "my_project"
registry_modules = [
    "my_project.components.*",
]
"""

PYPROJECT = """\
[project]
name = "{name}"
version = "0.1.0"

[tool.dg]
directory_type = "project"

[tool.dg.project]
root_module = "{name}"
"""
# A dg project's usual code location: whatever its defs folder holds.
DEFINITIONS = """\
from pathlib import Path

import dagster as dg

defs = dg.load_from_defs_folder(path_within_project=Path(__file__).parent)
"""
# The project's own table: the demo's events parser over a topic of its own.
TABLES = """\
from stream_assets import StreamingTable, kafka_topic
from stream_assets.tables.catalog import event_records

clicks = StreamingTable(
    name="clicks",
    sources={"events": kafka_topic("clicks", parser=event_records)},
    dead_letters="clicks_refused",
    keys=("topic", "partition", "offset"),
    description="Every usable click event; the others are in clicks_refused.",
)
TABLES = [clicks]
"""


def write_project(root: Path, name: str, defs_yaml: str) -> Path:
    """A dg project as `dg scaffold project` lays it out, with one StreamingTablesComponent."""
    package = root / name
    (package / "defs" / "streams").mkdir(parents=True)
    (root / "pyproject.toml").write_text(PYPROJECT.format(name=name))
    (package / "__init__.py").write_text("")
    (package / "definitions.py").write_text(DEFINITIONS)
    (package / "tables.py").write_text(TABLES)
    (package / "defs" / "__init__.py").write_text("")
    (package / "defs" / "streams" / "defs.yaml").write_text(textwrap.dedent(defs_yaml))
    return root


def dg_cli(project: Path, *args: str, env: dict[str, str] | None = None,
           unset: tuple[str, ...] = ()) -> subprocess.CompletedProcess[str]:
    """The real `dg`, run in the project with this interpreter's environment as its venv.

    The project is on the path as installed, in either layout (`src/` or not)."""
    environ = {**{k: v for k, v in os.environ.items() if k not in unset}, **(env or {}),
               "VIRTUAL_ENV": str(VENV),
               "PYTHONPATH": os.pathsep.join(
                   p for p in (str(project / "src"), str(project), str(ROOT),
                               os.environ.get("PYTHONPATH")) if p)}
    return subprocess.run([str(DG), *args], cwd=project, env=environ, capture_output=True,
                          text=True, timeout=240)


def documented_file(path: str) -> str:
    """The content docs/components.md gives for `path` (the fenced block after it)."""
    found = re.search(rf"`{re.escape(path)}`:\n\n```\w*\n(.*?)```", COMPONENTS_DOC.read_text(),
                      re.DOTALL)
    assert found, f"docs/components.md shows no {path}"
    return found.group(1)


def documented_variables() -> set[str]:
    """The environment variables docs/configuration.md lists (generated from the code)."""
    section = CONFIGURATION_DOC.read_text().split("## Environment variables", 1)[1]
    return set(re.findall(r"^\| `(\w+)` \|", section.split("\n## ", 1)[0], re.MULTILINE))


@pytest.mark.integration
def test_a_dg_project_with_the_component_loads_and_materializes_a_table(
    kafka_broker, topic_factory, event_hubs_connection_string, spark, tmp_path, monkeypatch,
):
    topic = topic_factory("clicks")
    records = [r.__class__(topic, r.key, r.value, r.kind, r.event)
               for r in generate_events(120, bad_ratio=0.1, seed=7, id_prefix="click")]
    produce(records, KafkaConnection(bootstrap_servers=kafka_broker.bootstrap))
    lake = tmp_path / "lake"
    project = write_project(tmp_path / "project", "click_streams", f"""\
        type: stream_assets.StreamingTablesComponent
        attributes:
          tables: click_streams.tables:TABLES
          kafka:
            stream_source:
              bootstrap_servers: "{{{{ env.{BOOTSTRAP_ENV} }}}}"
              security_protocol: SASL_PLAINTEXT
              sasl_mechanism: PLAIN
              sasl_username: $ConnectionString
              sasl_password: "{{{{ env.{PASSWORD_ENV} }}}}"
              topic_names:
                clicks: {topic}
          lake:
            tables_root: {lake / "tables"}
            checkpoints_root: {lake / "checkpoints"}
          spark:
            # The test session's SparkSession is shared by every test: a run must not stop it.
            stop_on_teardown: false
          checks:
            dead_letter_ratio:
              max_ratio: 0.5
        """)
    env = {BOOTSTRAP_ENV: kafka_broker.sasl_bootstrap, PASSWORD_ENV: event_hubs_connection_string}

    checked = dg_cli(project, "check", "defs", env=env)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    listed = dg_cli(project, "list", "defs", "--json", env=env)
    assert listed.returncode == 0, listed.stdout + listed.stderr
    listing = json.loads(listed.stdout)
    assert {a["asset_key"] for a in listing["assets"]} == {
        "clicks", "clicks_refused", "kafka/clicks"}
    assert {"catch_up_sensor", "stream_health_sensor"} <= {s["name"] for s in listing["sensors"]}
    assert event_hubs_connection_string not in listed.stdout + listed.stderr

    # The same project's definitions in this process, materialized against the real broker.
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    monkeypatch.syspath_prepend(str(project))
    defs = dg.load_from_defs_folder(path_within_project=project)
    source = defs.resources["stream_source"]
    # The secret stays a reference to the environment until a run reads it.
    assert isinstance(source.sasl_password, dg.EnvVar)
    result = dg.materialize([defs.resolve_assets_def("clicks")],
                            instance=dg.DagsterInstance.ephemeral())
    assert result.success

    rows = spark.read.format("delta").load(str(lake / "tables" / "clicks")).collect()
    assert sorted(r.event_id for r in rows) == sorted(
        r.event["event_id"] for r in records if r.kind == GOOD)
    refused = spark.read.format("delta").load(str(lake / "tables" / "clicks_refused"))
    assert refused.count() == sum(1 for r in records if r.kind != GOOD)


def test_the_documented_dg_project_loads_with_the_scaffolded_component(tmp_path):
    """docs/components.md's step by step: create-dagster 1.13's layout, the page's
    definitions.py and tables.py, the component from the real `dg scaffold`, the page's .env."""
    project = tmp_path / "my-project"
    package = project / "src" / "my_project"
    (package / "defs").mkdir(parents=True)
    (project / "pyproject.toml").write_text(CREATE_DAGSTER_PYPROJECT)
    (package / "__init__.py").write_text("")
    (package / "defs" / "__init__.py").write_text("")
    for name in ("definitions.py", "tables.py"):
        (package / name).write_text(documented_file(f"src/my_project/{name}"))

    scaffolded = dg_cli(project, "scaffold", "defs", "stream_assets.StreamingTablesComponent",
                        "streams")
    assert scaffolded.returncode == 0, scaffolded.stdout + scaffolded.stderr
    defs_yaml = (package / "defs" / "streams" / "defs.yaml").read_text()
    assert defs_yaml == documented_file("src/my_project/defs/streams/defs.yaml")
    # The scaffold names the broker variable stream_assets itself reads, as documented.
    assert set(ENV_NAME.findall(defs_yaml)) == {kafka.BOOTSTRAP_ENV}
    assert kafka.BOOTSTRAP_ENV in documented_variables()

    # Until the variable is set, `dg check defs` says which one.
    unset = dg_cli(project, "check", "defs", unset=(kafka.BOOTSTRAP_ENV,))
    assert unset.returncode != 0
    assert (f"kafka.stream_source.bootstrap_servers: the environment variable "
            f"{kafka.BOOTSTRAP_ENV} is not set") in unset.stdout + unset.stderr

    env_line = re.search(r"echo '(\w+=[^']*)' >> \.env", COMPONENTS_DOC.read_text())
    assert env_line, "docs/components.md sets no variable in .env"
    (project / ".env").write_text(env_line.group(1) + "\n")
    checked = dg_cli(project, "check", "defs", unset=(kafka.BOOTSTRAP_ENV,))
    assert checked.returncode == 0, checked.stdout + checked.stderr
    listed = dg_cli(project, "list", "defs", "--json", unset=(kafka.BOOTSTRAP_ENV,))
    assert listed.returncode == 0, listed.stdout + listed.stderr
    listing = json.loads(listed.stdout)
    assert {a["asset_key"] for a in listing["assets"]} == {
        "orders", "orders_dead_letters", "kafka/orders"}
    assert "continuous_streams" in {j["name"] for j in listing["jobs"]}


def test_the_docs_name_the_broker_variable_the_resources_read():
    for doc in (COMPONENTS_DOC, ROOT / "README.md"):
        named = re.findall(r"bootstrap_servers:\s*['\"]\{\{\s*env\.(\w+)", doc.read_text())
        assert named and set(named) == {kafka.BOOTSTRAP_ENV}, doc.name


def test_a_field_whose_variable_is_not_set_is_refused_naming_both(monkeypatch):
    monkeypatch.delenv(kafka.BOOTSTRAP_ENV, raising=False)
    with pytest.raises(Exception) as raised:
        StreamingTablesComponent.resolve_from_yaml(
            "tables: stream_assets.tables.catalog:TABLES\nkafka: {stream_source: "
            "{bootstrap_servers: '{{ env." + kafka.BOOTSTRAP_ENV + " }}'}}")
    assert (f"kafka.stream_source.bootstrap_servers: the environment variable "
            f"{kafka.BOOTSTRAP_ENV} is not set; export it") in str(raised.value)


def test_the_demo_is_a_dg_project_whose_component_dg_lists():
    checked = dg_cli(ROOT, "check", "defs")
    assert checked.returncode == 0, checked.stdout + checked.stderr
    listed = dg_cli(ROOT, "list", "components", "--json")
    assert listed.returncode == 0, listed.stdout + listed.stderr
    assert "stream_assets.StreamingTablesComponent" in {
        c["key"] for c in json.loads(listed.stdout)["items"]}


@pytest.mark.parametrize(
    ("attributes", "expected"),
    [
        ("tables: no_such_project.tables:TABLES",
         "tables: cannot import module 'no_such_project.tables'"),
        ("tables: stream_assets.tables.catalog:NO_TABLES",
         "module 'stream_assets.tables.catalog' has no attribute 'NO_TABLES'"),
        ("tables: stream_assets.tables.catalog:event_records",
         "is a function, not a non-empty list of StreamingTable"),
        ("tables: stream_assets.tables.catalog",
         "must be 'module:attribute', e.g. 'my_project.tables:TABLES'"),
        ("tables: stream_assets.tables.catalog:TABLES\n"
         "kafka: {stream_source: {bootstrap: 'broker:9092'}}",
         "bootstrap"),
        ("tables: stream_assets.tables.catalog:TABLES\nlake: {tables_root: 3}",
         "tables_root"),
    ],
)
def test_a_wrong_yaml_is_refused_at_load_saying_what_to_fix(attributes, expected):
    with pytest.raises(Exception) as raised:
        StreamingTablesComponent.resolve_from_yaml(attributes)
    assert expected in str(raised.value)


@pytest.mark.parametrize("yaml, expected", [
    ("kafka: {stream_source: {sasl_password: hunter2-secret}}",
     "kafka.stream_source.sasl_password: a secret is read from an environment variable; "
     'write "{{ env.VARIABLE_NAME }}"'),
    ("lake: {tables_root: s3a://b/t, s3_secret_access_key: hunter2-secret}",
     "lake.s3_secret_access_key: a secret is read from an environment variable"),
    ("kafka: {stream_source: {sasl_password: 31337}}",
     "kafka.stream_source.sasl_password: a secret is read from an environment variable"),
    # Misspelt: a pydantic error would quote the value, and this field's value is the secret.
    ("lake: {tables_root: s3a://b/t, s3_secret_acces_key: hunter2-secret}",
     "lake: unknown field 's3_secret_acces_key' (did you mean 's3_secret_access_key'?)"),
    ("kafka: {stream_source: {sasl_pasword: hunter2-secret}}",
     "kafka.stream_source: unknown field 'sasl_pasword' (did you mean 'sasl_password'?)"),
    ("event_hubs: {eh: {conection_string: 'Endpoint=sb://x/;SharedAccessKey=hunter2-secret'}}",
     "event_hubs.eh: unknown field 'conection_string' (did you mean 'connection_string'?)"),
    ("checks_per_table: {raw_events: {fresness: {max_age_minutes: 5}}}",
     "checks_per_table.raw_events: unknown field 'fresness' (did you mean 'freshness'?)"),
])
def test_a_secret_in_the_yaml_or_a_misspelt_field_is_refused_without_echoing_it(yaml, expected):
    with pytest.raises(Exception) as raised:
        StreamingTablesComponent.resolve_from_yaml(
            f"tables: stream_assets.tables.catalog:TABLES\n{yaml}")
    message = str(raised.value)
    assert expected in message
    assert "hunter2-secret" not in message and "31337" not in message


def test_dg_check_defs_names_the_wrong_field(tmp_path):
    project = write_project(tmp_path, "wrong_streams", """\
        type: stream_assets.StreamingTablesComponent
        attributes:
          tables: wrong_streams.tables:CLICKS
        """)
    checked = dg_cli(project, "check", "defs")
    assert checked.returncode != 0
    assert "module 'wrong_streams.tables' has no attribute 'CLICKS'" in (
        checked.stdout + checked.stderr)
