"""Create the telemetry queue and its dead-letter queue (idempotent); print the queue URL last.

    python scripts/setup_sqs.py

Reads AWS_ENDPOINT_URL, AWS_DEFAULT_REGION and SQS_QUEUE_NAME from the environment or
.env, like every other process. Without AWS_ENDPOINT_URL it talks to real AWS.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout, not installed

from src.common.logs import configure_logging
from src.common.provisioning import provision_queues
from src.common.settings import CommonSettings


def main() -> int:
    settings = CommonSettings()
    configure_logging(settings.log_level, settings.log_format)
    queues = provision_queues(settings)
    print(f"dead-letter queue: {queues.dlq_url}", file=sys.stderr)
    print(queues.url)
    return 0


if __name__ == "__main__":
    sys.exit(main())
