"""Where tables and checkpoints live: one root, a folder per table under each, and how to reach
the storage behind it (a local disk by default, or S3, ADLS Gen2, GCS: docs/cluster.md)."""

from __future__ import annotations

import os

from dagster import ConfigurableResource
from pydantic import Field, PrivateAttr

from stream_assets import paths
from stream_assets.lake_files import S3_SCHEMES, LakeFiles, S3Access

# The lake's place without code edits: a deployment sets these (docs/cluster.md).
TABLES_ROOT_ENV = "STREAM_ASSETS_TABLES_ROOT"
CHECKPOINTS_ROOT_ENV = "STREAM_ASSETS_CHECKPOINTS_ROOT"
PATH_STYLE_ENV = "STREAM_ASSETS_S3_PATH_STYLE"

# How long S3A keeps retrying a store that does not answer before the query fails. Hadoop's
# defaults add up to many minutes per request; a run should fail with the store's error in
# about a minute and be retried by Dagster or the user (docs/cluster.md).
_S3A_DEFAULTS = {
    "fs.s3a.attempts.maximum": "3",
    "fs.s3a.retry.limit": "3",
    "fs.s3a.retry.interval": "500ms",
    "fs.s3a.connection.establish.timeout": "15s",  # S3A's minimum
    "fs.s3a.connection.timeout": "30s",
    # RocksDB's state-store files go up through copyFromLocalFile, whose optimized path uses the
    # AWS SDK's async (Netty) client: against the test S3 server it failed every upload
    # ("S3Exception: Status Code: 100"; the SDK is built for Netty 4.1, pyspark ships 4.2). The
    # plain path writes through the same S3A output stream as every other file.
    "fs.s3a.optimized.copy.from.local.enabled": "false",
}


class DeltaLake(ConfigurableResource):
    """Locations of Delta tables and streaming checkpoints, and how to reach their storage.

    Local paths by default (under STREAM_ASSETS_HOME). For a cluster, set both roots to any URI
    that Spark and every executor can reach: `s3a://bucket/tables`, `abfss://…`, `gs://…`.
    For S3 and S3-compatible stores the `s3_*` fields (or the standard AWS environment
    variables) say how to reach it; pass the keys with `dagster.EnvVar`, never as literals.
    """

    tables_root: str = Field(
        default_factory=lambda: os.environ.get(TABLES_ROOT_ENV) or str(paths.tables_dir()),
        description=f"Root of the Delta tables; default: {TABLES_ROOT_ENV}, else "
        "$STREAM_ASSETS_HOME/tables.",
    )
    checkpoints_root: str = Field(
        default_factory=lambda: (os.environ.get(CHECKPOINTS_ROOT_ENV)
                                 or str(paths.checkpoints_dir())),
        description="Root of the streaming checkpoints (one folder per query); default: "
        f"{CHECKPOINTS_ROOT_ENV}, else $STREAM_ASSETS_HOME/checkpoints.",
    )
    s3_endpoint: str | None = Field(
        default=None,
        description="S3 endpoint URL, for S3-compatible stores (http://127.0.0.1:9000); "
        "default: AWS_ENDPOINT_URL_S3 or AWS_ENDPOINT_URL, else AWS itself.",
    )
    s3_region: str | None = Field(
        default=None, description="S3 region; default: AWS_REGION, else us-east-1."
    )
    s3_path_style_access: bool = Field(
        default_factory=lambda: os.environ.get(PATH_STYLE_ENV, "").lower() in ("1", "true"),
        description="Address buckets as endpoint/bucket rather than bucket.endpoint (most "
        f"S3-compatible servers need it); default: {PATH_STYLE_ENV}=true, else false.",
    )
    s3_access_key_id: str | None = Field(
        default=None,
        description="S3 access key id (EnvVar); default: the standard AWS credential chain.",
    )
    s3_secret_access_key: str | None = Field(
        default=None,
        description="S3 secret access key (EnvVar); default: the standard AWS credential chain.",
    )
    hadoop_config: dict[str, str] = Field(
        default_factory=dict,
        description="Extra Hadoop settings for the lake's storage (fs.s3a.*, fs.azure.*, "
        "fs.gs.*), set on every session that reaches the lake; they win over the defaults.",
    )
    _files: LakeFiles | None = PrivateAttr(default=None)

    def table_path(self, table: str) -> str:
        """Where the Delta table `table` lives: `<tables_root>/<table>`."""
        return f"{self.tables_root.rstrip('/')}/{table}"

    def checkpoint_path(self, query: str) -> str:
        """Where the streaming query `query` keeps its checkpoint: `<checkpoints_root>/<query>`."""
        return f"{self.checkpoints_root.rstrip('/')}/{query}"

    @property
    def s3(self) -> S3Access:
        return S3Access(
            endpoint=self.s3_endpoint or os.environ.get("AWS_ENDPOINT_URL_S3")
            or os.environ.get("AWS_ENDPOINT_URL"),
            region=self.s3_region or os.environ.get("AWS_REGION")
            or os.environ.get("AWS_DEFAULT_REGION"),
            path_style_access=self.s3_path_style_access,
            access_key_id=self.s3_access_key_id,
            secret_access_key=self.s3_secret_access_key,
        )

    @property
    def files(self) -> LakeFiles:
        """The lake's files without Spark (Delta logs, checkpoints), with these settings."""
        if self._files is None:
            self._files = LakeFiles(self.s3)
        return self._files

    def uses_s3(self) -> bool:
        return any(root.split("://")[0].lower() in S3_SCHEMES
                   for root in (self.tables_root, self.checkpoints_root))

    def hadoop_options(self) -> dict[str, str]:
        """Hadoop settings that let Spark's S3A connector reach the same store as `files`.

        Set on the session (`attach`), so they reach the driver's Delta log and checkpoint
        writers and, through each job's Hadoop configuration, the executors.
        """
        if not self.uses_s3():
            return dict(self.hadoop_config)
        s3 = self.s3
        options = dict(_S3A_DEFAULTS)
        if s3.endpoint:
            options["fs.s3a.endpoint"] = s3.endpoint
            options["fs.s3a.connection.ssl.enabled"] = str(
                not s3.endpoint.lower().startswith("http://")).lower()
        options["fs.s3a.path.style.access"] = str(s3.path_style_access).lower()
        if s3.region:
            options["fs.s3a.endpoint.region"] = s3.region
        if s3.access_key_id and s3.secret_access_key:
            options["fs.s3a.aws.credentials.provider"] = (
                "org.apache.hadoop.fs.s3a.SimpleAWSCredentialsProvider")
            options["fs.s3a.access.key"] = s3.access_key_id
            options["fs.s3a.secret.key"] = s3.secret_access_key
        options.update(self.hadoop_config)
        return options

    def attach(self, spark) -> None:
        """Give a SparkSession what it needs to reach this lake (idempotent, cheap)."""
        for key, value in self.hadoop_options().items():
            spark.conf.set(key, value)
