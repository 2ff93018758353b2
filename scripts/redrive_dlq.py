"""Move dead letters back from the dead-letter queue to the telemetry queue, once their cause is fixed.

    python scripts/redrive_dlq.py                        # dry run: list what would move, change nothing
    python scripts/redrive_dlq.py --only-valid           # dry run of moving only what decodes now
    python scripts/redrive_dlq.py --apply                # move every dead letter back
    python scripts/redrive_dlq.py --apply --only-valid   # move what decodes now; poison stays in the DLQ
    python scripts/redrive_dlq.py --apply --max 100      # move at most 100 messages

The logic is ``src.ops.redrive``.
"""

import sys

from src.ops.redrive import main

if __name__ == "__main__":
    sys.exit(main())
