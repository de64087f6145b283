#!/usr/bin/env bash
# Make Debian's Chromium available at /usr/bin/chromium for the browser test
# (stream_assets_tests/test_ops_browser.py drives it with the `playwright` Python package; no
# browser download from Playwright is needed or wanted). Idempotent: a second run only checks.
#
# Exit status: 0 ready; 77 this machine cannot provide Chromium (not root, no apt-get, the
# package cannot be installed), with the reason on stderr, so that callers may skip.
set -euo pipefail

CANNOT=77
say() { echo "ensure-chromium: $*" >&2; }
cannot() { say "$*"; exit "$CANNOT"; }

if [[ -x /usr/bin/chromium ]]; then
    exit 0
fi
[[ $(id -u) -eq 0 ]] || cannot "needs root to install Debian's chromium package (running as $(id -un))"
command -v apt-get > /dev/null || cannot "Chromium is not installed and there is no apt-get"

# Two test sessions starting at once must not both run apt.
lock_dir=/run/lock
[[ -d $lock_dir && -w $lock_dir ]] || lock_dir=/tmp
exec 9> "$lock_dir/stream-assets-ensure-chromium.lock"
flock -w 900 9 || cannot "another ensure-chromium.sh held the lock for 15 minutes"
[[ -x /usr/bin/chromium ]] && exit 0

say "installing Chromium from Debian's packages (apt-get install chromium)"
export DEBIAN_FRONTEND=noninteractive
apt-get -o DPkg::Lock::Timeout=600 update -qq > /dev/null || cannot "apt-get update failed"
apt-get -o DPkg::Lock::Timeout=600 install -y -qq --no-install-recommends chromium > /dev/null \
    || cannot "apt-get install chromium failed"
[[ -x /usr/bin/chromium ]] || cannot "chromium was installed but /usr/bin/chromium is missing"
say "ready: $(/usr/bin/chromium --version 2>/dev/null || echo /usr/bin/chromium)"
