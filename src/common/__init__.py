"""What every service speaks: the reading schema, the SQS message codec, settings and AWS clients.

Nothing in here knows about FastAPI, files or HTTP clients; services depend on this
package, never on each other.
"""
