"""`make dashboard`: the embedded stack with a simulated fleet streaming until Ctrl-C, plus the dashboard.

The logic is ``src.loadtest.live``.
"""

import sys

from src.loadtest.live import main

if __name__ == "__main__":
    sys.exit(main())
