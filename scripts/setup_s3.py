"""Create the S3 tier's bucket, or bring it up to date (idempotent); print the bucket name last.

    python scripts/setup_s3.py

Reads S3_BUCKET, AWS_ENDPOINT_URL and AWS_DEFAULT_REGION from the environment or .env,
like every other process; without AWS_ENDPOINT_URL it talks to real AWS. Exits 2 when
S3_BUCKET is unset. The bucket gets all public access blocked, ACLs disabled
(BucketOwnerEnforced), default encryption SSE-S3 and the lifecycle rules of
``src.common.provisioning.lifecycle_rules`` (raw/ to STANDARD_IA at 30 days and GLACIER
at 90; incomplete multipart uploads aborted after 7); running it again puts every
setting back as it should be.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout, not installed

from src.common.logs import configure_logging
from src.common.provisioning import lifecycle_rules, provision_bucket
from src.common.settings import CommonSettings

EXIT_NO_BUCKET = 2


def main() -> int:
    settings = CommonSettings()
    configure_logging(settings.log_level, settings.log_format)
    if not settings.s3_bucket:
        print("S3_BUCKET is not set: name the bucket in the environment or .env (see .env.example)", file=sys.stderr)
        return EXIT_NO_BUCKET
    bucket = provision_bucket(settings)
    rule_ids = ", ".join(str(rule.get("ID")) for rule in lifecycle_rules())
    print(f"public access blocked, SSE-S3, lifecycle rules: {rule_ids}", file=sys.stderr)
    print(bucket)
    return 0


if __name__ == "__main__":
    sys.exit(main())
