#!/usr/bin/env bash
# The whole test suite. Tests start their own broker and Spark; nothing here needs the demo.
set -euo pipefail
cd "$(dirname "$0")/.."
exec .venv/bin/pytest "$@"
