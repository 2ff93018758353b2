"""Delete local raw batch files that are safely in S3, for hours older than a cut-off.

    python scripts/prune_local.py [--older-than-hours 48] [--dry-run]

The logic is ``src.ops.prune``.
"""

import sys

from src.ops.prune import main

if __name__ == "__main__":
    sys.exit(main())
