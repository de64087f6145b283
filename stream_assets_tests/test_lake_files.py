"""The lake's files without Spark (lake_files.py), on a local folder and on the test S3 server.

No Spark here: what the sensors, the guard and the "nothing new" test read is checked against
what was written, through the same calls on both stores.
"""

from __future__ import annotations

import time

import pytest

from stream_assets.checkpoint_log import NO_BATCH, CommittedBatch, last_committed_batch
from stream_assets.delta_log import commit_of, delta_log_version
from stream_assets.errors import LakeUnreachable
from stream_assets.lake_files import LakeFiles


@pytest.fixture(params=["local", "s3"])
def store(request, tmp_path) -> tuple[LakeFiles, str]:
    if request.param == "local":
        return LakeFiles(), str(tmp_path)
    lake = request.getfixturevalue("s3_server").lake(request.getfixturevalue("s3_workdir"))
    return lake.files, lake.tables_root


def test_files_are_listed_read_replaced_and_deleted_alike(store):
    files, root = store
    assert files.names(f"{root}/cp") is None and files.files_below(f"{root}/cp") == []
    files.write_text(f"{root}/cp/offsets/0", "v1\n{}\n{\"t\":{\"0\":5}}\n")
    files.write_text(f"{root}/cp/commits/0", "v1\n{}\n")
    files.write_text(f"{root}/cp/marker.json", "old")
    files.write_text(f"{root}/cp/marker.json", "new")  # replaced whole
    assert files.names(f"{root}/cp") == ["commits", "marker.json", "offsets"]
    assert files.files_below(f"{root}/cp") == ["commits/0", "marker.json", "offsets/0"]
    assert files.read_text(f"{root}/cp/marker.json") == "new"
    assert files.is_dir(f"{root}/cp") and not files.exists(f"{root}/cp/nope")
    assert abs(files.mtime(f"{root}/cp/commits/0") - time.time()) < 120
    assert last_committed_batch(f"{root}/cp", files) == CommittedBatch(0, ('{"t":{"0":5}}',), 0)

    files.delete_file(f"{root}/cp/commits/0")
    files.remove_empty_folders(f"{root}/cp")
    assert files.names(f"{root}/cp") == ["marker.json", "offsets"]
    assert last_committed_batch(f"{root}/cp", files) == NO_BATCH
    assert files.delete_tree(f"{root}/cp") and not files.delete_tree(f"{root}/cp")
    assert files.names(f"{root}/cp") is None


def test_a_delta_log_version_is_read_from_the_listing(store):
    files, root = store
    table = f"{root}/t"
    assert delta_log_version(table, files) is None and commit_of(table, files) is None
    for version in range(3):
        files.write_text(f"{table}/_delta_log/{version:020d}.json", "{}\n")
    files.write_text(f"{table}/_delta_log/00000000000000000002.checkpoint.parquet", "")
    assert delta_log_version(table, files) == 2
    version, mtime = commit_of(table, files)
    assert version == 2 and abs(mtime - time.time()) < 120


def test_an_unknown_scheme_is_left_to_spark_and_a_store_that_is_down_says_so(s3_server,
                                                                              s3_workdir):
    assert LakeFiles().resolve("hdfs://namenode/lake") is None
    files = s3_server.lake(s3_workdir).files
    with s3_server.outage(), pytest.raises(LakeUnreachable, match="did not answer"):
        files.names(f"{s3_workdir}/anything")
