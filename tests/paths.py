"""Where the checkout's files are, for tests that read documents or run its scripts."""

from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
