"""The JVM jars: resolved once by Maven into a local folder, looked up when a JVM starts.

Nothing here downloads while a SparkSession starts: `stream-assets setup` resolves the jars,
and a missing folder is reported with that command instead of a class-not-found trace. The
`udf` group is the project's own Spark functions (jvm/udf), compiled by `javac` against the
jars of the installed pyspark, so it always matches the Spark that loads it.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from stream_assets import paths
from stream_assets.errors import MissingJars

POM_DIR = paths.INSTALL_ROOT / "jvm"
UDF_SOURCES = POM_DIR / "udf" / "src" / "main" / "java"
UDF_JAR = "stream-assets-udf.jar"
_STAMP = ".resolved-from"
_VERSION_SUFFIX = re.compile(r"-\d[\w.\-]*\.jar$")


def _artifact(jar_name: str) -> str:
    """`jackson-core-2.13.5.jar` -> `jackson-core`."""
    return _VERSION_SUFFIX.sub("", jar_name)


def pyspark_jars_dir() -> Path:
    import pyspark

    return Path(pyspark.__file__).parent / "jars"


def group_dir(group: str) -> Path:
    return paths.jars_dir() / group


def _run(cmd: list[str], failure: str) -> None:
    result = subprocess.run(cmd, capture_output=True, text=True)
    if result.returncode != 0:
        raise MissingJars(f"{failure} (exit {result.returncode}):\n"
                          f"{result.stdout[-3000:]}{result.stderr[-3000:]}")


@dataclass(frozen=True)
class _MavenGroup:
    """Jars that Maven resolves from jvm/<name>/pom.xml."""

    name: str
    # For jars that join pyspark's on one classpath: pyspark's wheel already ships Spark,
    # Hadoop, Jackson, Parquet and logging, and a second, older copy of any of them breaks at
    # run time, so Spark's copy is kept.
    without_pyspark_jars: bool = False

    def digest(self, sha: Any) -> None:
        sha.update((POM_DIR / self.name / "pom.xml").read_bytes())

    def build(self, staging: Path, quiet: bool) -> list[Path]:
        mvn = shutil.which("mvn")
        if mvn is None:
            raise MissingJars("Maven ('mvn') is not on PATH; install it (apt-get install maven).")
        cmd = [mvn, "-B", "-f", str(POM_DIR / self.name / "pom.xml"),
               "dependency:copy-dependencies", f"-DoutputDirectory={staging}"]
        if quiet:
            cmd.insert(2, "-q")
        _run(cmd, f"Maven could not resolve the {self.name} jars")
        jars = sorted(staging.glob("*.jar"))
        if self.without_pyspark_jars:
            shipped = {_artifact(p.name) for p in pyspark_jars_dir().glob("*.jar")}
            jars = [j for j in jars if _artifact(j.name) not in shipped]
        return jars


@dataclass(frozen=True)
class _UdfGroup:
    """The project's own Spark functions (jvm/udf), compiled against pyspark's jars (Spark's
    API and its Jackson), so that they always match the Spark that loads them."""

    name: str = "udf"

    def digest(self, sha: Any) -> None:
        from pyspark import __version__

        sha.update(__version__.encode())
        for source in sorted(UDF_SOURCES.rglob("*.java")):
            sha.update(source.relative_to(UDF_SOURCES).as_posix().encode())
            sha.update(source.read_bytes())

    def build(self, staging: Path, quiet: bool) -> list[Path]:
        javac, jar_tool = shutil.which("javac"), shutil.which("jar")
        if javac is None or jar_tool is None:
            raise MissingJars(
                "'javac' and 'jar' (a Java 17 JDK) are needed to build the project's Spark "
                "functions (jvm/udf); install one (apt-get install openjdk-17-jdk-headless)."
            )
        classes = staging / "classes"
        sources = [str(p) for p in sorted(UDF_SOURCES.rglob("*.java"))]
        _run([javac, "--release", "17", "-nowarn", "-cp", str(pyspark_jars_dir() / "*"),
              "-d", str(classes), *sources], f"javac could not compile {UDF_SOURCES}")
        _run([jar_tool, "--create", "--file", str(staging / UDF_JAR), "-C", str(classes), "."],
             f"'jar' could not package {UDF_JAR}")
        return [staging / UDF_JAR]


_GROUPS = {g.name: g for g in (
    _MavenGroup("spark", without_pyspark_jars=True), _UdfGroup(), _MavenGroup("kafka"))}
GROUPS = tuple(_GROUPS)


def _digest(group: str) -> str:
    import hashlib

    sha = hashlib.sha256()
    _GROUPS[group].digest(sha)
    return sha.hexdigest()


def is_resolved(group: str) -> bool:
    stamp = group_dir(group) / _STAMP
    return stamp.exists() and stamp.read_text().strip() == _digest(group)


def resolve(group: str, *, quiet: bool = True) -> Path:
    """Fill one jar group's folder once; a no-op while what it is made from has not changed."""
    target = group_dir(group)
    if is_resolved(group):
        return target
    with tempfile.TemporaryDirectory(prefix=f"jars-{group}-") as staging:
        jars = _GROUPS[group].build(Path(staging), quiet)
        if target.exists():
            shutil.rmtree(target)
        target.mkdir(parents=True)
        for jar in jars:
            shutil.copy2(jar, target / jar.name)
    (target / _STAMP).write_text(_digest(group) + "\n")
    return target


def jars(group: str) -> list[Path]:
    """The resolved jars of a group; raises MissingJars naming the setup command."""
    found = sorted(group_dir(group).glob("*.jar")) if group_dir(group).is_dir() else []
    if not found:
        raise MissingJars(
            f"no {group} jars in {group_dir(group)}; run 'stream-assets setup' (or 'make setup') "
            "once to resolve them with Maven, or set STREAM_ASSETS_JARS to a folder that has them"
        )
    return found
