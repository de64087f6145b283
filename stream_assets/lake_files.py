"""The lake's files read and written without Spark: Delta logs, checkpoints, our markers.

The catch-up sensor, the "nothing new" test, the checks' reuse, the backlog measure and the
checkpoint guard all look at a few small files (`_delta_log/NNN.json`, `offsets/N`,
`commits/N`). Starting Spark for that costs seconds, so they read them directly, through
pyarrow's file systems, which know a local disk and object storage (S3 and S3-compatible
servers, ADLS Gen2, GCS) alike. Spark reaches the same locations through Hadoop's connectors
(S3A, ABFS, GCS); resources/lake.py gives both the same settings.

Object stores have no atomic rename, but an object appears only when its upload completes (a
PUT, or a multipart upload's last request), and every file read here is one such object
(Delta's commit files, Spark's log files): a reader sees a complete file or none.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass, field
from functools import cached_property
from urllib.parse import urlparse

import pyarrow.fs as pafs

from stream_assets.errors import LakeUnreachable
from stream_assets.paths import local_path

S3_SCHEMES = ("s3a", "s3", "s3n")
_AZURE_SCHEMES = ("abfss", "abfs")
_GCS_SCHEMES = ("gs", "gcs")


@dataclass(frozen=True)
class S3Access:
    """How to reach an S3 or S3-compatible store; None fields fall back on the AWS defaults
    (the standard AWS_* environment variables, ~/.aws, instance roles)."""

    endpoint: str | None = None
    region: str | None = None
    path_style_access: bool = False
    access_key_id: str | None = None
    secret_access_key: str | None = field(default=None, repr=False)


class LakeFiles:
    """The lake's files, local or on object storage, addressed by the URIs Spark uses."""

    def __init__(self, s3: S3Access | None = None) -> None:
        self._s3 = s3 or S3Access()
        self._others: dict[tuple[str, ...], pafs.FileSystem] = {}

    @cached_property
    def _local(self) -> pafs.FileSystem:
        return pafs.LocalFileSystem()

    @cached_property
    def _s3_filesystem(self) -> pafs.FileSystem:
        s3 = self._s3
        options: dict = {}
        if s3.region:
            options["region"] = s3.region  # else pyarrow's own lookup (AWS_DEFAULT_REGION, ~/.aws)
        if s3.endpoint:
            parsed = urlparse(s3.endpoint)
            options["endpoint_override"] = parsed.netloc or parsed.path
            options["scheme"] = parsed.scheme or "https"
        if s3.access_key_id and s3.secret_access_key:
            options["access_key"] = s3.access_key_id
            options["secret_key"] = s3.secret_access_key
        # pyarrow addresses buckets path-style unless told otherwise; AWS accepts both.
        options["force_virtual_addressing"] = not s3.path_style_access and not s3.endpoint
        # Fail in seconds when the store is down, like the queries' own retries (lake.py).
        options["connect_timeout"] = 5
        options["request_timeout"] = 20
        options["retry_strategy"] = pafs.AwsStandardS3RetryStrategy(max_attempts=2)
        return pafs.S3FileSystem(**options)

    def resolve(self, location: str) -> tuple[pafs.FileSystem, str] | None:
        """The file system and its path for a location; None for a scheme it does not know."""
        parsed = urlparse(location)
        scheme = parsed.scheme.lower()
        if scheme in ("", "file"):
            return self._local, local_path(location) or location
        if scheme in S3_SCHEMES:
            return self._s3_filesystem, f"{parsed.netloc}{parsed.path}".rstrip("/")
        if scheme in _AZURE_SCHEMES:
            # abfss://container@account.dfs.core.windows.net/path; credentials from the
            # environment (AZURE_* variables or a managed identity), as the ABFS driver's.
            container, _, host = parsed.netloc.partition("@")
            account = host.split(".")[0]
            return (self._other(("azure", account),
                                lambda: pafs.AzureFileSystem(account_name=account)),
                    f"{container}{parsed.path}".rstrip("/"))
        if scheme in _GCS_SCHEMES:
            return (self._other(("gcs",), pafs.GcsFileSystem),
                    f"{parsed.netloc}{parsed.path}".rstrip("/"))
        return None

    def _other(self, key: tuple[str, ...], build) -> pafs.FileSystem:
        """One file system per store: building one looks up credentials."""
        if key not in self._others:
            self._others[key] = build()
        return self._others[key]

    def _at(self, location: str) -> tuple[pafs.FileSystem, str]:
        found = self.resolve(location)
        if found is None:
            raise LakeUnreachable(f"no file system for {location!r}: use a local path, "
                                  "s3a://, abfss:// or gs://")
        return found

    @staticmethod
    def _unreachable(location: str, exc: OSError) -> LakeUnreachable:
        return LakeUnreachable(f"the lake's storage did not answer for {location} ({exc}); "
                               "check that it is up and the lake resource's endpoint and "
                               "credentials")

    # -- reading ---------------------------------------------------------------------------

    def names(self, folder: str) -> list[str] | None:
        """The names directly in a folder, None when it does not exist."""
        filesystem, path = self._at(folder)
        try:
            infos = filesystem.get_file_info(pafs.FileSelector(path, allow_not_found=True))
        except FileNotFoundError:
            return None
        except NotADirectoryError:
            return None
        except OSError as exc:
            raise self._unreachable(folder, exc) from exc
        if not infos and filesystem.get_file_info(path).type == pafs.FileType.NotFound:
            return None
        return sorted(os.path.basename(i.path.rstrip("/")) for i in infos)

    def files_below(self, folder: str) -> list[str]:
        """Every file below a folder, relative to it, sorted ([] when it does not exist)."""
        filesystem, path = self._at(folder)
        try:
            infos = filesystem.get_file_info(
                pafs.FileSelector(path, recursive=True, allow_not_found=True))
        except OSError as exc:
            raise self._unreachable(folder, exc) from exc
        base = path.rstrip("/") + "/"
        return sorted(i.path[len(base):] for i in infos
                      if i.type == pafs.FileType.File and i.path.startswith(base))

    def folder_size(self, folder: str) -> tuple[int, int]:
        """(files, bytes) directly in a folder ((0, 0) when it does not exist)."""
        filesystem, path = self._at(folder)
        try:
            infos = filesystem.get_file_info(pafs.FileSelector(path, allow_not_found=True))
        except OSError as exc:
            raise self._unreachable(folder, exc) from exc
        sizes = [i.size or 0 for i in infos if i.type == pafs.FileType.File]
        return len(sizes), sum(sizes)

    def is_dir(self, location: str) -> bool:
        filesystem, path = self._at(location)
        try:
            return filesystem.get_file_info(path).type == pafs.FileType.Directory
        except OSError as exc:
            raise self._unreachable(location, exc) from exc

    def exists(self, location: str) -> bool:
        filesystem, path = self._at(location)
        try:
            return filesystem.get_file_info(path).type != pafs.FileType.NotFound
        except OSError as exc:
            raise self._unreachable(location, exc) from exc

    def mtime(self, location: str) -> float | None:
        """The file's modification time (seconds since the epoch), None if it is missing."""
        filesystem, path = self._at(location)
        try:
            info = filesystem.get_file_info(path)
        except OSError as exc:
            raise self._unreachable(location, exc) from exc
        if info.type == pafs.FileType.NotFound or info.mtime is None:
            return None
        return info.mtime.timestamp()

    def read_text(self, location: str) -> str:
        """A whole file as UTF-8; FileNotFoundError when missing, UnicodeDecodeError if not."""
        filesystem, path = self._at(location)
        with filesystem.open_input_stream(path) as stream:
            return stream.read().decode("utf-8")

    # -- writing ---------------------------------------------------------------------------

    def write_text(self, location: str, text: str) -> None:
        """Replace a file whole: a reader sees the old file or the new one, never a torn one."""
        local = local_path(location)
        if local is None:
            filesystem, path = self._at(location)
            # The object appears whole when the upload completes (one PUT, or a multipart upload
            # that S3 publishes at its last request), never torn.
            with filesystem.open_output_stream(path) as out:
                out.write(text.encode("utf-8"))
            return
        folder, name = os.path.split(local)
        os.makedirs(folder, exist_ok=True)
        handle, temp = tempfile.mkstemp(prefix=f".{name}.", suffix=".tmp", dir=folder)
        try:
            with os.fdopen(handle, "w") as out:
                out.write(text)
                out.flush()
                os.fsync(out.fileno())
            os.replace(temp, local)
        except BaseException:
            if os.path.exists(temp):
                os.unlink(temp)
            raise

    def delete_file(self, location: str) -> None:
        filesystem, path = self._at(location)
        filesystem.delete_file(path)

    def delete_tree(self, location: str) -> bool:
        """Delete a folder and everything below it; False when there was nothing."""
        filesystem, path = self._at(location)
        try:
            if filesystem.get_file_info(path).type == pafs.FileType.NotFound:
                return False
            filesystem.delete_dir(path)
        except FileNotFoundError:
            return False
        except OSError as exc:
            raise self._unreachable(location, exc) from exc
        return True

    def remove_empty_folders(self, root: str) -> None:
        """Remove the folders below `root` that hold nothing (deepest first)."""
        filesystem, path = self._at(root)
        infos = filesystem.get_file_info(
            pafs.FileSelector(path, recursive=True, allow_not_found=True))
        folders = sorted((i.path for i in infos if i.type == pafs.FileType.Directory),
                         key=lambda p: -len(p))
        for folder in folders:
            if not filesystem.get_file_info(pafs.FileSelector(folder)):
                filesystem.delete_dir(folder)


# For paths known to be on a local disk (tests, scripts); a lake's own is `DeltaLake.files`.
LOCAL_FILES = LakeFiles()
