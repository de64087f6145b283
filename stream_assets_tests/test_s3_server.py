"""The test S3 server itself (stream_assets/dev/s3_server.py): reachable, then refused during an
outage, then back on the same port with every object it had."""

from __future__ import annotations

import pytest
from botocore.exceptions import (
    EndpointConnectionError,
    IncompleteReadError,
    ResponseStreamingError,
)


def test_outage_refuses_connections_and_keeps_the_objects(s3_server, s3_workdir):
    client = s3_server.client()
    key = s3_workdir.split("/", 3)[3] + "/object"
    client.put_object(Bucket=s3_server.bucket, Key=key, Body=b"kept")
    assert s3_server.is_up

    with s3_server.outage():
        assert not s3_server.is_up
        with pytest.raises(EndpointConnectionError):
            client.get_object(Bucket=s3_server.bucket, Key=key)
        with pytest.raises(OSError, match=r"(?i)connect"):
            s3_server.pyarrow_filesystem().open_input_stream(f"{s3_server.bucket}/{key}").read()

    assert s3_server.is_up
    assert client.get_object(Bucket=s3_server.bucket, Key=key)["Body"].read() == b"kept"
    s3 = s3_server.pyarrow_filesystem()
    assert s3.open_input_stream(f"{s3_server.bucket}/{key}").read() == b"kept"


def test_outage_breaks_a_transfer_in_flight(s3_server, s3_workdir):
    """What a materialization sees when the server goes away mid-request: the open connection
    breaks (it does not hang, and no late bytes arrive)."""
    client = s3_server.client()
    key = s3_workdir.split("/", 3)[3] + "/big"
    client.put_object(Bucket=s3_server.bucket, Key=key, Body=b"x" * (32 << 20))
    body = client.get_object(Bucket=s3_server.bucket, Key=key)["Body"]
    assert body.read(1 << 16)
    # The relay resets the connection: botocore sees the body end early (or the read fail).
    with s3_server.outage(), pytest.raises((IncompleteReadError, ResponseStreamingError)):
        while body.read(1 << 16):
            pass
    assert len(client.get_object(Bucket=s3_server.bucket, Key=key)["Body"].read()) == 32 << 20
