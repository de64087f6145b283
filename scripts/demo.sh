#!/usr/bin/env bash
# The main job: a local broker with demo data, and the Dagster UI with webserver and daemon.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=.venv/bin
export STREAM_ASSETS_HOME="${STREAM_ASSETS_HOME:-$PWD/.stream_assets}"
export DAGSTER_HOME="${DAGSTER_HOME:-$STREAM_ASSETS_HOME/dagster}"
HOST="${DAGSTER_HOST:-127.0.0.1}"
PORT="${DAGSTER_PORT:-3000}"
DEMO_EVENTS="${DEMO_EVENTS:-20000}"

mkdir -p "$DAGSTER_HOME"
[ -f "$DAGSTER_HOME/dagster.yaml" ] || cp deploy/local/dagster.yaml "$DAGSTER_HOME/dagster.yaml"
# A home from before the concurrency pools gets them (one writer per table), nothing else.
$BIN/python -m stream_assets.dev.instance_settings "$DAGSTER_HOME/dagster.yaml"

$BIN/stream-assets kafka start
# Demo data once: running the demo again reuses what the topics already hold.
$BIN/stream-assets produce --events "$DEMO_EVENTS" --bad-ratio 0.02 --seed 42 --if-empty
# user_dimension is seeded by materializing its asset, so the UI shows it materialized.
$BIN/stream-assets seed-users --if-missing

echo
echo "Dagster UI: http://$HOST:$PORT  (Ctrl-C stops the UI; 'stream-assets kafka stop' stops Kafka)"
echo
# dg reads the project from pyproject.toml ([tool.dg]): the code location stream_assets.definitions
# in this virtual environment, after checking the defs.yaml files of stream_assets/defs/.
export VIRTUAL_ENV="$PWD/.venv"
exec $BIN/dg dev -h "$HOST" -p "$PORT"
