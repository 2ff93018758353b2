"""The hourly aggregator: per-vehicle statistics of one hour's stored readings."""
