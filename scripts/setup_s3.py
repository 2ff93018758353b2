"""Create the S3 tier's bucket, or bring it up to date (idempotent); print the bucket name last.

    python scripts/setup_s3.py

Reads S3_BUCKET, AWS_ENDPOINT_URL, AWS_DEFAULT_REGION and RAW_EXPIRE_DAYS from the
environment or .env; without AWS_ENDPOINT_URL it talks to real AWS. Exits 2 when
S3_BUCKET is unset. The lifecycle tiers raw/ and curated/ down (Standard-IA at 30 days,
Glacier at 90); RAW_EXPIRE_DAYS (unset by default, at least 3) also deletes raw/ objects
that many days after upload. The logic (encryption, public access block, lifecycle
rules) is ``src.ops.bucket``.
"""

import sys

from src.ops.bucket import main

if __name__ == "__main__":
    sys.exit(main())
