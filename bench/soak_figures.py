"""The soak's arithmetic (bench/soak.py): percentiles, the goals' ratios, growth rates. Pure.

Samples are dicts as soak.py writes them: one per table and sample time (`kind` "table"),
one per sample time for the process and the Dagster instance (`kind` "instance"), one per
maintenance run (`kind` "maintenance"). `minute` is the time since the continuous run began.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any


def percentile(values: Sequence[float], q: float) -> float | None:
    """The nearest-rank percentile (q in [0, 1]) of `values`; None when there are none."""
    if not values:
        return None
    ordered = sorted(values)
    # ceil(q * n), less a hair so that 0.99 * 100 (99.00000000000001) is rank 99.
    rank = max(1, math.ceil(q * len(ordered) - 1e-9))
    return ordered[min(rank, len(ordered)) - 1]


def ratio(late: float | None, early: float | None) -> float | None:
    if late is None or not early:
        return None
    return round(late / early, 3)


def per_query(samples: Sequence[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    """Each query's own samples (its main table's rows), in time order."""
    found: dict[str, list[dict[str, Any]]] = {}
    for sample in samples:
        if sample.get("kind") == "table" and sample["table"] == sample["query"]:
            found.setdefault(sample["query"], []).append(sample)
    for rows in found.values():
        rows.sort(key=lambda s: s["minute"])
    return found


def steady_ratios(samples: Sequence[dict[str, Any]], warmup_minutes: float,
                  sample_minutes: float | None = None) -> dict[str, dict[str, Any]]:
    """Per query: batch p50 in the first sample past the warm-up against the last full one's.

    The sample taken after the queries stopped covers only the minute or so since the one
    before, a few batches among them the last, cut short by the stop: with `sample_minutes`,
    a last sample covering less than half of it is not the end. Goal (issue 30): with
    maintenance on, end / warm-up <= 1.2.
    """
    out = {}
    for query, rows in per_query(samples).items():
        timed = [r for r in rows if r.get("batch_ms_p50") is not None]
        if (sample_minutes and len(timed) > 1
                and timed[-1]["minute"] - timed[-2]["minute"] < sample_minutes / 2):
            timed = timed[:-1]
        after = [r for r in timed if r["minute"] >= warmup_minutes] or timed
        if not after:
            continue
        first, last = after[0], after[-1]
        out[query] = {"warm_minute": first["minute"], "warm_p50_ms": first["batch_ms_p50"],
                      "end_minute": last["minute"], "end_p50_ms": last["batch_ms_p50"],
                      "ratio": ratio(last["batch_ms_p50"], first["batch_ms_p50"])}
    return out


def live_file_bounds(samples: Sequence[dict[str, Any]]) -> dict[str, dict[str, int]]:
    """Per table: live files at most, and at the end, over the whole soak."""
    out: dict[str, dict[str, int]] = {}
    for sample in samples:
        if sample.get("kind") != "table" or sample.get("live_files") is None:
            continue
        seen = out.setdefault(sample["table"], {"max": 0, "end": 0})
        seen["max"] = max(seen["max"], sample["live_files"])
        seen["end"] = sample["live_files"]
    return out


def first_maintenance_ratio(samples: Sequence[dict[str, Any]], query: str,
                            young_p50_ms: float | None) -> dict[str, Any] | None:
    """An aged table's batch p50 before its first maintenance, and after it (the first sample
    after that run ended), against a young table's (`young_p50_ms`, from another soak).
    Goal: after / young <= 1.2."""
    runs = [s for s in samples if s.get("kind") == "maintenance" and s.get("query") == query]
    rows = [r for r in per_query(samples).get(query, []) if r.get("batch_ms_p50") is not None]
    if not runs or not rows:
        return None
    # Aged: before the first run began; maintained: after it ended (batches during it still
    # paid for the small files).
    began, ended = runs[0]["minute"], runs[0].get("ended_minute", runs[0]["minute"])
    before = [r for r in rows if r["minute"] <= began]
    after = [r for r in rows if r["minute"] > ended]
    aged = before[-1]["batch_ms_p50"] if before else None
    maintained = after[0]["batch_ms_p50"] if after else None
    return {"first_maintenance_minute": began, "ended_minute": ended, "aged_p50_ms": aged,
            "maintained_p50_ms": maintained, "young_p50_ms": young_p50_ms,
            "maintained_over_aged": ratio(maintained, aged),
            "maintained_over_young": ratio(maintained, young_p50_ms)}


def growth_per_hour(points: Sequence[tuple[float, float]]) -> float | None:
    """Least-squares slope of (minute, value) points, per hour; None with under two points."""
    if len(points) < 2:
        return None
    n = len(points)
    mean_x = sum(x for x, _ in points) / n
    mean_y = sum(y for _, y in points) / n
    spread = sum((x - mean_x) ** 2 for x, _ in points)
    if not spread:
        return None
    slope = sum((x - mean_x) * (y - mean_y) for x, y in points) / spread
    return slope * 60


def event_log_growth(samples: Sequence[dict[str, Any]]) -> dict[str, float | None]:
    """The Dagster event log's rows and bytes per hour of continuous run, and per day."""
    instance = [s for s in samples if s.get("kind") == "instance"]
    rows = growth_per_hour([(s["minute"], s["event_log_rows"]) for s in instance])
    size = growth_per_hour([(s["minute"], s["event_log_bytes"]) for s in instance])
    return {"rows_per_hour": rows, "bytes_per_hour": size,
            "rows_per_day": None if rows is None else rows * 24,
            "bytes_per_day": None if size is None else size * 24}
