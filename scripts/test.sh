#!/usr/bin/env bash
# The whole test suite. Tests start their own broker and Spark; nothing here needs the demo.
set -euo pipefail
cd "$(dirname "$0")/.."
# The UI test drives Debian's Chromium and the deployment test a local Postgres; both scripts
# are idempotent and exit 77 (the tests then skip, saying why) where they cannot install.
scripts/ensure-chromium.sh || [ $? -eq 77 ]
# Two workers by default (CI has two cores): most tests wait on a JVM, a broker or a poll, so
# the other worker uses the core meanwhile. Each worker has its own broker, S3 server and
# SparkSession; a worker takes a whole test file at a time, and the files sharing `dagster dev`
# together (conftest.py), longest first. STREAM_ASSETS_TEST_WORKERS=0 runs in one process.
workers=${STREAM_ASSETS_TEST_WORKERS:-2}
if [ "$workers" = 0 ]; then
    exec .venv/bin/pytest "$@"
fi
exec .venv/bin/pytest -n "$workers" --dist loadfile --no-loadscope-reorder "$@"
