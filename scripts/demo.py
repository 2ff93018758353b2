"""`make demo`: the whole pipeline on the embedded AWS, then a summary; non-zero if a reading is lost.

The logic is ``src.loadtest.demo``.
"""

import sys

from src.loadtest.demo import main

if __name__ == "__main__":
    sys.exit(main())
