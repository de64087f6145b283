#!/usr/bin/env bash
# The whole test suite. Tests start their own broker and Spark; nothing here needs the demo.
set -euo pipefail
cd "$(dirname "$0")/.."
# The UI test drives Debian's Chromium and the deployment test a local Postgres; both scripts
# are idempotent and exit 77 (the tests then skip, saying why) where they cannot install.
scripts/ensure-chromium.sh || [ $? -eq 77 ]
exec .venv/bin/pytest "$@"
