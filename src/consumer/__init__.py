"""The batch consumer: SQS -> hour-partitioned JSONL files, deleting only what is durable.

Modules: ``receiving`` (SQS polling, decoding, deleting), ``batching`` (readings into
batches by size or age), ``storage`` (atomic, fsynced batch files), ``visibility`` (keeping
held messages invisible), ``uploading`` (copies in S3), ``metrics`` (latency percentiles
and counters) and ``batch_consumer`` (the entry point wiring them).
"""
