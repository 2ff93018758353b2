"""Create the telemetry queue and its dead-letter queue (idempotent); print the queue URL last.

    python scripts/setup_sqs.py

Reads AWS_ENDPOINT_URL, AWS_DEFAULT_REGION, SQS_QUEUE_NAME and the queue attributes
(VISIBILITY_TIMEOUT_S, ...) from the environment or .env; without AWS_ENDPOINT_URL it
talks to real AWS. The logic is ``src.ops.queues``.
"""

import sys

from src.ops.queues import main

if __name__ == "__main__":
    sys.exit(main())
