"""Print the Glue/Athena DDL for the bucket's raw/ and curated/ trees, with partition projection.

    python scripts/athena_ddl.py [--bucket NAME] [--database telemetry] [--table-prefix P] [--since 2026] [--until 2035]

Without ``--bucket``, ``S3_BUCKET`` names the bucket; exit status 2 if neither does. Paste
each printed statement into Athena (engine version 3) on its own. The logic is
``src.aggregator.athena``; the queries are in docs/querying.md.
"""

import sys

from src.aggregator.athena import main

if __name__ == "__main__":
    sys.exit(main())
