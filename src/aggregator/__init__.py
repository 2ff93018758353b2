"""The hourly job: an hour's raw JSONL compacted into curated Parquet, then per-vehicle statistics.

``curated`` (DuckDB compaction, manifests, catch-up), ``queries`` (all its SQL and the curated
schema), ``spark`` (the same on PySpark), ``s3_files`` and ``sources`` (reading S3),
``athena`` (the Glue/Athena DDL) and ``hourly_stats`` (the command cron runs).
"""
