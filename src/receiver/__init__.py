"""The HTTP receiver: authenticates, validates and stamps readings, then queues them in SQS.

Run it with ``uvicorn src.receiver.app:app --port 8000``.
"""
