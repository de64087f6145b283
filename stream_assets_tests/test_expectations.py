"""Expectations on a table's rows, judged in the query's own pass (on batch DataFrames)."""

from __future__ import annotations

import pytest
from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from stream_assets import (
    DeclarationError,
    StreamingTable,
    expect,
    expect_or_drop,
    expect_or_fail,
    kafka_topic,
    upstream,
)
from stream_assets.errors import ExpectationFailed
from stream_assets.tables import dead_letters
from stream_assets.tables.writes import DeltaAppend, WriteTarget, split_writer
from stream_assets_tests.test_parse_events import kafka_frame as kafka_bytes_frame

AMOUNTS = ["5", "-1", "x", "7", "", "-3", "12"]


def parse_amounts(kafka: DataFrame) -> DataFrame:
    """Kafka's columns, `amount` (null when not a number) and `error` for empty values."""
    text = F.col("value").cast("string")
    return kafka.select(
        "*", text.try_cast("long").alias("amount"),
        F.when(text.isNull() | (text == ""), F.lit("empty")).alias("error"),
    )


def amounts(spark) -> DataFrame:
    return kafka_bytes_frame(spark, [v.encode() for v in AMOUNTS])


def reference() -> dict[str, list[int]]:
    """Which offsets each rule refuses, in plain Python."""
    parsed = {i: (int(v) if v.lstrip("-").isdigit() else None) for i, v in enumerate(AMOUNTS)
              if v != ""}
    return {
        "empty": [i for i, v in enumerate(AMOUNTS) if v == ""],
        "is_number": [i for i, a in parsed.items() if a is None],
        "not_negative": [i for i, a in parsed.items() if a is not None and a < 0],
    }


def test_warn_counts_and_keeps_drop_routes_with_its_name_and_exact_bytes(spark):
    table = StreamingTable(
        name="amounts", sources={"amounts": kafka_topic("a", parser=parse_amounts)},
        expectations=(expect_or_drop("is_number", "amount IS NOT NULL"),
                      expect("not_negative", "amount >= 0")),
    )
    out = table.build_stream({"amounts": amounts(spark)}).cache()
    expected = reference()
    rows = dead_letters.table_rows(out).collect()
    letters = dead_letters.letters(out).collect()
    # A warned row stays; a dropped one is a dead letter with the expectation's name.
    assert sorted(r["offset"] for r in rows) == sorted(
        set(range(len(AMOUNTS))) - set(expected["empty"]) - set(expected["is_number"]))
    assert sorted((r["offset"], r["error"]) for r in letters) == sorted(
        [(i, "empty") for i in expected["empty"]]
        + [(i, "is_number") for i in expected["is_number"]])
    assert all(r["raw_bytes"] == AMOUNTS[r["offset"]].encode() for r in letters)
    flags = {r["offset"]: r["__passes_not_negative"] for r in rows}
    assert sorted(o for o, ok in flags.items() if not ok) == expected["not_negative"]


def test_a_drop_after_a_transform_keeps_the_row_as_json(spark):
    table = StreamingTable(
        name="doubled", sources={"rows": upstream("amounts")},
        transform=lambda rows: rows.select("offset", (F.col("amount") * 2).alias("doubled")),
        expectations=(expect_or_drop("small", "doubled < 20"),),
    )
    assert table.dead_letter_table == "doubled_dead_letters"
    source = spark.createDataFrame([(0, 5), (1, 12)], "offset long, amount long")
    out = table.build_stream({"rows": source})
    (letter,) = dead_letters.letters(out).collect()
    assert (letter["offset"], letter["error"], letter["raw_bytes"]) == (1, "small", None)
    assert letter["raw_value"] == '{"offset":1,"doubled":24}'


def test_a_fail_expectation_writes_nothing_and_names_the_rule_and_a_row(spark, workdir):
    table = StreamingTable(
        name="amounts", sources={"amounts": kafka_topic("a", parser=parse_amounts)},
        expectations=(expect_or_fail("not_negative", "amount IS NULL OR amount >= 0"),),
    )
    path, dead = str(workdir / "amounts"), str(workdir / "dead")
    write = split_writer(DeltaAppend(), WriteTarget("amounts", "amounts", path),
                         WriteTarget("amounts", "dead", dead), table.expectations)
    with pytest.raises(ExpectationFailed) as raised:
        write(table.build_stream({"amounts": amounts(spark)}), 0)
    message = str(raised.value)
    assert "amounts: expectation 'not_negative'" in message
    assert "'amount': -1" in message or "'amount': -3" in message
    assert "replays the same batch" in message
    # Nothing of the batch anywhere.
    assert not (workdir / "amounts").exists() and not (workdir / "dead").exists()

    fixed = StreamingTable(name="amounts", sources=table.sources)
    write = split_writer(DeltaAppend(), WriteTarget("amounts", "amounts", path),
                         WriteTarget("amounts", "dead", dead))
    write(fixed.build_stream({"amounts": amounts(spark)}), 0)
    written = spark.read.format("delta").load(path)
    assert written.count() == len(AMOUNTS) - len(reference()["empty"])
    assert not any(c.startswith("__") for c in written.columns)


def test_a_wrong_expectation_is_refused_at_load():
    with pytest.raises(DeclarationError, match="letters, digits"):
        expect("not a name", "x > 0")
    with pytest.raises(DeclarationError, match="Spark SQL boolean"):
        expect("empty", "  ")
    with pytest.raises(DeclarationError, match="declared twice"):
        StreamingTable(name="t", sources={"r": upstream("x")},
                       expectations=(expect("a", "x > 0"), expect_or_drop("a", "x < 9")))


def test_a_report_judges_expectations_over_the_batches_it_covers():
    from stream_assets.monitoring.asset_events import AssetEvents
    from stream_assets.monitoring.report_events import expectation_outcomes, failing_text
    from stream_assets.monitoring.tracker import BatchTotals
    from stream_assets.tables.expectations import OBSERVATION

    rules = (expect("positive", "n > 0", max_violation_ratio=0.1),
             expect_or_drop("has_id", "id IS NOT NULL"))
    totals = BatchTotals()
    assert expectation_outcomes(rules, totals) == [] and failing_text([]) is None
    for rows, positive, has_id in ((100, 5, 0), (100, 10, 2)):
        totals.add({"numInputRows": rows, "observedMetrics": {OBSERVATION: {
            "rows": rows, "failed_positive": positive, "failed_has_id": has_id}}})
    outcomes = expectation_outcomes(rules, totals)
    assert [(o.rows, o.violations, o.passed) for o in outcomes] == [
        (200, 15, True), (200, 2, False)]
    assert failing_text(outcomes) == "has_id: 1.0% of 200 rows violated (allowed 0.00%)"
    positive, has_id = AssetEvents(continuous=True).expectations("t", outcomes)
    assert (positive.check_name, positive.passed, positive.severity.value) == (
        "positive", True, "WARN")
    assert has_id.metadata["rows_failed"].value == 2
    assert has_id.metadata["mode"].value == "continuous"


def test_rescued_fields_are_counted_and_named_for_the_check_and_the_alert(spark):
    """A table of a declared record schema gets the `rescued_data` rule: the rows carrying
    fields the schema does not name, and those names, through the same observed metrics."""
    from stream_assets.monitoring.report_events import expectation_outcomes, failing_text
    from stream_assets.monitoring.tracker import BatchTotals
    from stream_assets.tables.expectations import OBSERVATION, ROWS, verdict_columns

    table = StreamingTable(name="pay", sources={"p": kafka_topic("p", schema="id STRING")},
                           dead_letters="pay_dead_letters")
    (rule,) = [e for e in table.expectations if e.name == "rescued_data"]
    assert (rule.action, rule.max_violation_ratio) == ("warn", 0.0)
    values = [b'{"id": "a"}', b'{"id": "b", "tip": 1}', b'{"id": "c", "tip": 2, "v2": {}}',
              b'{"id": "d", "note": null}', b"not json"]
    parsed = table.sources["p"].parser(kafka_bytes_frame(spark, values))
    counted = F.col("error").isNull()
    observed = parsed.withColumns(verdict_columns([rule])).agg(
        F.count_if(counted).alias(ROWS), *rule.metrics(counted)).collect()[0].asDict()
    totals = BatchTotals()
    totals.add({"numInputRows": len(values), "observedMetrics": {OBSERVATION: observed}})
    (outcome,) = [o for o in expectation_outcomes(table.expectations, totals)
                  if o.expectation is rule]
    # Written here from the values: three of the four JSON objects carry other fields.
    assert (outcome.rows, outcome.violations, outcome.fields) == (4, 3, ("note", "tip", "v2"))
    assert not outcome.passed and outcome.severity == "WARN"
    assert outcome.description == ("3 of 4 rows carried fields the schema does not name, kept "
                                   "in _rescued_data: note, tip, v2")
    assert failing_text([outcome]) == ("rescued_data: fields the schema does not name in 3 of "
                                       "4 rows: note, tip, v2")
    # A declaration's own rule of that name replaces it (a share of drift it accepts).
    own = expect("rescued_data", "_rescued_data IS NULL", max_violation_ratio=0.5)
    table = StreamingTable(name="pay", sources={"p": kafka_topic("p", schema="id STRING")},
                           expectations=(own,))
    assert [e for e in table.expectations if e.name == "rescued_data"] == [own]
