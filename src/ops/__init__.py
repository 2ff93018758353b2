"""What operators run beside the services: queue and bucket setup, the dead-letter redrive,
pruning local files S3 holds. ``scripts/`` has a thin wrapper for each."""
