"""Give an existing demo DAGSTER_HOME the pool settings of deploy/local/dagster.yaml.

scripts/demo.sh copies deploy/local/dagster.yaml into $DAGSTER_HOME only when it is missing,
so a home made before the pools existed would keep running without them. This adds the keys
stream_assets owns (`concurrency.pools`, run_monitoring's `free_slots_after_run_end_seconds`),
moves the run limit where Dagster wants it beside pools (`concurrency.runs`), and leaves every
other key alone. A pools setting the user chose is never changed: it is reported with what one
writer per table needs. The file is rewritten only when something changes, with a backup.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path
from typing import Any

import yaml

POOLS = {"granularity": "op", "default_limit": 1}
FREE_SLOTS_AFTER_S = 30
# Dagster refuses these in the run coordinator's config once `concurrency` has pools.
RUN_KEYS = ("max_concurrent_runs", "tag_concurrency_limits")
REFUSED_BESIDE_POOLS = ("block_op_concurrency_limited_runs", "op_concurrency_slot_buffer")


def merged(settings: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """The settings with the pool keys added, and what was done or must be done by hand."""
    settings = yaml.safe_load(yaml.safe_dump(settings or {}))  # a deep copy
    notes: list[str] = []
    concurrency = settings.setdefault("concurrency", {})
    pools = concurrency.get("pools")
    if pools is None:
        concurrency["pools"] = dict(POOLS)
        notes.append("added concurrency.pools (granularity: op, default_limit: 1)")
        coordinator = (settings.get("run_coordinator") or {}).get("config") or {}
        for key in RUN_KEYS:
            if key in coordinator:
                concurrency.setdefault("runs", {})[key] = coordinator.pop(key)
                notes.append(f"moved run_coordinator.config.{key} to concurrency.runs.{key}")
        for key in REFUSED_BESIDE_POOLS:
            if key in coordinator:
                coordinator.pop(key)
                notes.append(f"removed run_coordinator.config.{key} (Dagster refuses it "
                             "beside concurrency.pools)")
        if "run_coordinator" in settings and not coordinator:
            settings["run_coordinator"].pop("config", None)
    else:
        if pools.get("granularity", "op") != "op":
            notes.append("kept your concurrency.pools.granularity; one writer per table needs "
                         "`op` (docs/guarantees.md)")
        if pools.get("default_limit") != 1:
            notes.append("kept your concurrency.pools.default_limit; one writer per table needs "
                         "limit 1 on each stream_assets.<table> pool (`dagster instance "
                         "concurrency set stream_assets.<table> 1`)")
    monitoring = settings.setdefault("run_monitoring", {"enabled": True})
    if "free_slots_after_run_end_seconds" not in monitoring:
        monitoring["free_slots_after_run_end_seconds"] = FREE_SLOTS_AFTER_S
        notes.append(f"added run_monitoring.free_slots_after_run_end_seconds: "
                     f"{FREE_SLOTS_AFTER_S}")
    return settings, notes


def update(path: Path) -> list[str]:
    """Merge the keys into the file at `path`; returns what it did or could not do."""
    before = yaml.safe_load(path.read_text()) or {}
    after, notes = merged(before)
    if after != before:
        backup = path.with_name(path.name + ".bak")
        shutil.copy(path, backup)
        path.write_text(yaml.safe_dump(after, sort_keys=False))
        notes.append(f"previous file kept as {backup}")
    return notes


def main(argv: list[str]) -> int:
    path = Path(argv[0])
    for note in update(path):
        print(f"{path}: {note}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
