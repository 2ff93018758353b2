"""The read-only dashboard: ``uvicorn src.dashboard.app:app --port 8050`` (docs/dashboard.md).

It scrapes the receiver's and the consumers' ``/metrics``, reads the queue's attributes
from SQS and counts this hour's batch files, keeps the last minutes in memory, and serves
them as pages and JSON. It imports only :mod:`src.common`.
"""
