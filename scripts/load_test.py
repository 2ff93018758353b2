"""Drive the receiver at a fixed rate and prove every accepted reading reached disk.

    python scripts/load_test.py --embedded --messages 1000 --rate 200
    python scripts/load_test.py --messages 10000 --rate 500 --batch-size 50 --report-json report.json

The logic is ``src.loadtest.run``.
"""

import sys

from src.loadtest.run import main

if __name__ == "__main__":
    sys.exit(main())
