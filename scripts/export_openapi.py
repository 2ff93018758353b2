"""Write the receiver's OpenAPI document to docs/api-spec.yaml (what /docs shows).

    python scripts/export_openapi.py          # rewrite the file
    python scripts/export_openapi.py --check  # exit 1 if the file is stale

A unit test runs the check, so the checked-in document cannot drift from the app.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import yaml

from src.receiver.app import create_app

REPO_ROOT = Path(__file__).resolve().parents[1]  # the checkout, for the files this script reads and writes

SPEC_PATH = REPO_ROOT / "docs" / "api-spec.yaml"


def render() -> str:
    """The app's OpenAPI document as YAML, keys in the app's order."""
    return yaml.safe_dump(create_app().api.openapi(), sort_keys=False, allow_unicode=True, width=100)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--check", action="store_true", help="only compare; exit 1 if stale")
    args = parser.parse_args(argv)
    text = render()
    if args.check:
        if not SPEC_PATH.exists() or SPEC_PATH.read_text() != text:
            print(f"{SPEC_PATH.relative_to(REPO_ROOT)} is stale: run python scripts/export_openapi.py", file=sys.stderr)
            return 1
        return 0
    SPEC_PATH.parent.mkdir(parents=True, exist_ok=True)
    SPEC_PATH.write_text(text)
    print(f"wrote {SPEC_PATH.relative_to(REPO_ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
