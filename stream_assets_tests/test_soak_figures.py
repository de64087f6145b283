"""The soak benchmark's arithmetic (bench/soak_figures.py), against figures worked by hand."""

from bench.soak_figures import (
    event_log_growth,
    first_maintenance_ratio,
    growth_per_hour,
    percentile,
    steady_ratios,
)


def table(minute: float, query: str, p50: float | None, name: str | None = None) -> dict:
    return {"kind": "table", "minute": minute, "query": query, "table": name or query,
            "batch_ms_p50": p50}


def test_percentile_is_the_nearest_rank():
    values = list(range(1, 101))  # 1..100
    assert percentile(values, 0.5) == 50
    assert percentile(values, 0.99) == 99  # not 100: 0.99 * 100 is rank 99
    assert percentile([7.0], 0.99) == 7.0
    assert percentile([3, 1, 2], 0.5) == 2
    assert percentile([], 0.5) is None


def test_steady_ratio_compares_the_end_with_the_first_sample_past_warm_up():
    samples = [table(1, "q", 900), table(5, "q", 400), table(5, "q", 9, "q_dead"),
               table(10, "q", 500), {"kind": "instance", "minute": 10}]
    assert steady_ratios(samples, warmup_minutes=5)["q"] == {
        "warm_minute": 5, "warm_p50_ms": 400, "end_minute": 10, "end_p50_ms": 500,
        "ratio": 1.25}


def test_first_maintenance_ratio_splits_where_the_first_run_ended():
    samples = [table(1, "raw", 1500), table(2, "raw", 1600),
               {"kind": "maintenance", "minute": 2.5, "ended_minute": 3.5, "query": "raw"},
               table(3, "raw", 1400), table(4, "raw", 1100),
               {"kind": "maintenance", "minute": 5.5, "query": "raw"}, table(6, "raw", 1000)]
    found = first_maintenance_ratio(samples, "raw", young_p50_ms=1000)
    assert found["aged_p50_ms"] == 1600 and found["maintained_p50_ms"] == 1100
    assert found["maintained_over_aged"] == round(1100 / 1600, 3)
    assert found["maintained_over_young"] == 1.1


def test_growth_is_the_least_squares_slope_per_hour():
    assert growth_per_hour([(0, 10), (30, 40), (60, 70)]) == 60.0
    assert growth_per_hour([(5, 1)]) is None
    growth = event_log_growth([{"kind": "instance", "minute": m, "event_log_rows": 2 * m,
                                "event_log_bytes": 1000 * m} for m in (1, 2, 3)])
    assert growth["rows_per_hour"] == 120.0 and growth["rows_per_day"] == 2880.0
    assert growth["bytes_per_day"] == 1000 * 60 * 24
