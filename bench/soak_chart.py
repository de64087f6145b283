"""The soak's chart (bench/soak.py): what grows over a stream's life, one panel per figure.

matplotlib comes with the `bench` extra (`pip install 'stream_assets[bench]'`), not with the
package: only this chart needs it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # a file, no display
import matplotlib.pyplot as plt  # after the backend is chosen


def _series(samples: list[dict[str, Any]], key: str, by: str) -> dict[str, tuple[list, list]]:
    lines: dict[str, tuple[list, list]] = {}
    for s in samples:
        if s.get("kind") == "table" and s.get(key) is not None and (
                by == "table" or s["table"] == s["query"]):
            xs, ys = lines.setdefault(s[by], ([], []))
            xs.append(s["minute"])
            ys.append(s[key])
    return lines


def draw(samples: list[dict[str, Any]], summary: dict[str, Any], path: Path) -> None:
    panels = [
        ("batch_ms_p50", "query", "batch duration p50 (ms)", 1),
        ("batch_ms_p99", "query", "batch duration p99 (ms)", 1),
        ("live_files", "table", "live files", 1),
        ("log_bytes", "table", "_delta_log (MB)", 1e6),
        ("checkpoint_bytes", "query", "streaming checkpoint folder (MB)", 1e6),
        ("state_bytes", "query", "state (MB, last batch)", 1e6),
    ]
    fig, axes = plt.subplots(3, 3, figsize=(15, 11))
    maintained = sorted({s["minute"] for s in samples if s.get("kind") == "maintenance"})
    for ax, (key, by, title, scale) in zip(axes.flat, panels, strict=False):
        for name, (xs, ys) in sorted(_series(samples, key, by).items()):
            ax.plot(xs, [y / scale for y in ys], marker=".", label=name)
        ax.set_title(title)
    instance = [s for s in samples if s.get("kind") == "instance"]
    minutes = [s["minute"] for s in instance]
    ax = axes.flat[6]
    ax.plot(minutes, [s["driver_heap_used_bytes"] / 1e6 for s in instance], label="JVM heap used")
    ax.plot(minutes, [s["jvm_rss_bytes"] / 1e6 for s in instance], label="JVM RSS")
    ax.plot(minutes, [s["python_rss_bytes"] / 1e6 for s in instance], label="Python RSS")
    ax.set_title("driver memory (MB)")
    ax = axes.flat[7]
    ax.plot(minutes, [s["event_log_rows"] for s in instance], color="C3")
    ax.set_title("Dagster event log rows")
    ax = axes.flat[8]
    ax.plot(minutes, [s["event_log_bytes"] / 1e6 for s in instance], color="C4")
    ax.set_title("Dagster storage (MB)")
    for ax in axes.flat:
        for minute in maintained:
            ax.axvline(minute, color="grey", linestyle=":", linewidth=1)
        ax.set_xlabel("minutes")
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7)
    prefilled = summary.get("prefilled") or {}
    fig.suptitle(f"soak {summary['date']}: {summary['minutes']:g} min at {summary['rate']:g} "
                 f"events/s, maintain_tables every {summary['maintain_minutes']:g} min (dotted)"
                 + (f", raw_events prefilled with {prefilled.get('raw_events', 0):,} files"
                    if prefilled else ""))
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)
