"""Record formats: how a Kafka record's bytes become a table's typed columns, or a reason.

A format is a parser (stream_assets/tables/sources.py) built from a declaration, such as a JSON
schema (json_records.py); the project's JVM functions do the reading (functions.py).
"""
