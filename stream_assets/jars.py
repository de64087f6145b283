"""The JVM jars: resolved once by Maven into a local folder, looked up when a JVM starts.

Nothing here downloads while a SparkSession starts: `stream-assets setup` resolves the jars,
and a missing folder is reported with that command instead of a class-not-found trace.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import tempfile
from pathlib import Path

from stream_assets import paths
from stream_assets.errors import MissingJars

POM_DIR = paths.PROJECT_ROOT / "jvm"
GROUPS = ("spark", "kafka")
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


def _pom_digest(group: str) -> str:
    import hashlib

    return hashlib.sha256((POM_DIR / group / "pom.xml").read_bytes()).hexdigest()


def is_resolved(group: str) -> bool:
    stamp = group_dir(group) / _STAMP
    return stamp.exists() and stamp.read_text().strip() == _pom_digest(group)


def resolve(group: str, *, quiet: bool = True) -> Path:
    """Run Maven for one jar group into its folder; a no-op when the pom has not changed."""
    target = group_dir(group)
    if is_resolved(group):
        return target
    mvn = shutil.which("mvn")
    if mvn is None:
        raise MissingJars("Maven ('mvn') is not on PATH; install it (apt-get install maven).")
    with tempfile.TemporaryDirectory(prefix=f"jars-{group}-") as staging:
        cmd = [mvn, "-B", "-f", str(POM_DIR / group / "pom.xml"), "dependency:copy-dependencies",
               f"-DoutputDirectory={staging}"]
        if quiet:
            cmd.insert(2, "-q")
        result = subprocess.run(cmd, capture_output=True, text=True)
        if result.returncode != 0:
            raise MissingJars(
                f"Maven could not resolve the {group} jars (exit {result.returncode}):\n"
                f"{result.stdout[-3000:]}{result.stderr[-2000:]}"
            )
        jars = sorted(Path(staging).glob("*.jar"))
        if group == "spark":
            # pyspark's wheel already ships Spark, Hadoop, Jackson, Parquet and logging; a second,
            # older copy of any of them on the classpath breaks at run time, so keep Spark's.
            shipped = {_artifact(p.name) for p in pyspark_jars_dir().glob("*.jar")}
            jars = [j for j in jars if _artifact(j.name) not in shipped]
        if target.exists():
            shutil.rmtree(target)
        target.mkdir(parents=True)
        for jar in jars:
            shutil.copy2(jar, target / jar.name)
    (target / _STAMP).write_text(_pom_digest(group) + "\n")
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
