"""The S3 tier's bucket, created or repaired idempotently, with lifecycle rules S3 accepts.

Every setting is applied with a Put* call that replaces the whole configuration, so a
rerun changes nothing on a bucket that is as it should be and puts back whatever was
changed by hand (rules added by hand are dropped). moto accepts lifecycle rules that S3
refuses, so :func:`check_lifecycle_rules` checks ours against S3's documented
constraints first, and :func:`lifecycle_rules` drops the transitions an optional
``raw/`` expiry (``RAW_EXPIRE_DAYS``) would make refused or billed, so that the check
passes for every value the settings accept. ``python scripts/setup_s3.py`` prints the
bucket name last.
"""

from __future__ import annotations

import itertools
import logging
import sys
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, Final, cast

from src.common.aws import SyncS3Client, sync_client
from src.common.layout import S3_CURATED_PREFIX, S3_RAW_PREFIX
from src.common.logs import configure_logging
from src.common.settings import BucketSettings, CommonSettings

if TYPE_CHECKING:
    from mypy_boto3_s3.literals import BucketLocationConstraintType, TransitionStorageClassType
    from mypy_boto3_s3.type_defs import LifecycleRuleTypeDef

log = logging.getLogger(__name__)

EXIT_NO_BUCKET = 2

# S3 documentation behind the lifecycle rules and their validator:
#   [T] https://docs.aws.amazon.com/AmazonS3/latest/userguide/lifecycle-transition-general-considerations.html
#       (supported transitions, the waterfall between classes, 30 days before STANDARD_IA,
#       GLACIER at least 30 days after STANDARD_IA, the 128 KB minimum object size)
#   [A] https://docs.aws.amazon.com/AmazonS3/latest/API/API_Transition.html
#       (Days per storage class) and .../API/API_LifecycleRule.html (ID, Filter)
#   [E] https://docs.aws.amazon.com/AmazonS3/latest/userguide/lifecycle-configuration-examples.html
#       ("Tiering down the storage class over an object's lifetime": STANDARD_IA at 30
#       days and GLACIER at 90 days in one rule, the plan used here)
#   [C] https://docs.aws.amazon.com/AmazonS3/latest/userguide/storage-class-intro.html#sc-compare
#       (minimum storage durations: 30 days for the IA classes, 90 for Glacier Instant and
#       Flexible Retrieval, 180 for Deep Archive; deleting earlier is billed as if kept)
#   [M] https://docs.aws.amazon.com/AmazonS3/latest/API/API_PutBucketLifecycleConfiguration.html
#       (TransitionDefaultMinimumObjectSize)

REGION_WITHOUT_LOCATION_CONSTRAINT = "us-east-1"  # CreateBucket there takes no LocationConstraint

STANDARD_IA_AFTER_DAYS = 30  # [T], [A]: S3 refuses STANDARD_IA/ONEZONE_IA before day 30
GLACIER_AFTER_DAYS = 90  # the seed's day; [T] needs it at least 30 days after STANDARD_IA (day 60 here)
ABORT_MULTIPART_AFTER_DAYS = 7  # parts of an upload nobody finished are billed until removed
# raw/ and curated/ tier down alike: [E]'s plan, Standard-IA at day 30 and Glacier at day 90.
TIER_DOWN: tuple[tuple[int, TransitionStorageClassType], ...] = (
    (STANDARD_IA_AFTER_DAYS, "STANDARD_IA"),
    (GLACIER_AFTER_DAYS, "GLACIER"),
)

# Objects under 128 KB are never transitioned (S3's default, [M]); stated so a bucket changed by hand is put back.
TRANSITION_DEFAULT_MINIMUM_OBJECT_SIZE: Final = "all_storage_classes_128K"

# S3's waterfall [T]: a lifecycle rule may only move objects down this list.
TRANSITION_ORDER = ("STANDARD_IA", "INTELLIGENT_TIERING", "ONEZONE_IA", "GLACIER_IR", "GLACIER", "DEEP_ARCHIVE")
IA_CLASSES = frozenset({"STANDARD_IA", "ONEZONE_IA"})
IA_MIN_DAYS = 30  # [T]: days in the current class before a transition to an IA class, and out of one
MIN_STORAGE_DAYS = {  # [C]: deleting (expiring) earlier is billed as if the object had stayed
    "STANDARD_IA": 30,
    "INTELLIGENT_TIERING": 0,
    "ONEZONE_IA": 30,
    "GLACIER_IR": 90,
    "GLACIER": 90,
    "DEEP_ARCHIVE": 180,
}
MAX_RULE_ID_CHARS = 255  # [A], LifecycleRule.ID
LIFECYCLE_ACTIONS = (
    "Transitions",
    "Expiration",
    "NoncurrentVersionTransitions",
    "NoncurrentVersionExpiration",
    "AbortIncompleteMultipartUpload",
)


def lifecycle_rules(raw_expire_days: int | None = None) -> list[LifecycleRuleTypeDef]:
    """``raw/`` and ``curated/``: Standard-IA at day 30, Glacier at day 90; ``aggregated/``
    stays in Standard; unfinished multipart uploads are aborted after 7 days.

    ``curated/`` is never deleted. ``raw/`` is deleted ``raw_expire_days`` days after
    upload when that is set (``RAW_EXPIRE_DAYS``; ``None``, the default, keeps it), and
    then keeps only the transitions that fit before the expiry (:func:`tier_down_before`):
    none below 60 days, Standard-IA only from 60 to 179, both from 180. Raises
    ``ValueError`` for an expiry S3 refuses (below 1 day). Why these days, and why objects
    under 128 KB stay in Standard: docs/architecture.md ("Why these lifecycle rules").
    """
    if raw_expire_days is not None and (
        not isinstance(raw_expire_days, int) or isinstance(raw_expire_days, bool) or raw_expire_days < 1
    ):
        raise ValueError(f"RAW_EXPIRE_DAYS must be a whole number of days >= 1, not {raw_expire_days!r}")
    return [
        _tier_down_rule("raw", S3_RAW_PREFIX, raw_expire_days),
        _tier_down_rule("curated", S3_CURATED_PREFIX, None),
        {
            "ID": "abort-incomplete-multipart-uploads-7d",
            "Status": "Enabled",
            "Filter": {"Prefix": ""},
            "AbortIncompleteMultipartUpload": {"DaysAfterInitiation": ABORT_MULTIPART_AFTER_DAYS},
        },
    ]


def tier_down_before(expire_days: int | None) -> list[tuple[int, TransitionStorageClassType]]:
    """The transitions of :data:`TIER_DOWN` that still pay off with an expiry at ``expire_days``.

    A transition is kept only when the object then stays in its new class at least that
    class's minimum storage duration before it expires ([C]: 30 days for Standard-IA, 90
    for Glacier), and every later one goes with it: with the plan's days 30 and 90, no
    transition below 60 days, Standard-IA alone from 60 to 179, both from 180. A shorter
    stay would be billed as if the object had stayed (and S3 refuses an expiry on or
    before the last transition), so the object stays where it is until it expires.
    ``None`` (no expiry) keeps them all.
    """
    kept: list[tuple[int, TransitionStorageClassType]] = []
    for days, storage_class in TIER_DOWN:
        if expire_days is not None and expire_days - days < max(MIN_STORAGE_DAYS[storage_class], 1):
            break
        kept.append((days, storage_class))
    return kept


def _tier_down_rule(name: str, prefix: str, expire_days: int | None) -> LifecycleRuleTypeDef:
    """One prefix's rule; its ID names what it does, e.g. ``raw-standard-ia-30d-expire-90d``."""
    steps = tier_down_before(expire_days)
    id_parts = [name, *(f"{storage_class.lower().replace('_', '-')}-{days}d" for days, storage_class in steps)]
    if expire_days is not None:
        id_parts.append(f"expire-{expire_days}d")
    rule: LifecycleRuleTypeDef = {"ID": "-".join(id_parts), "Status": "Enabled", "Filter": {"Prefix": prefix}}
    if steps:
        rule["Transitions"] = [{"Days": days, "StorageClass": storage_class} for days, storage_class in steps]
    if expire_days is not None:
        rule["Expiration"] = {"Days": expire_days}
    return rule


def check_lifecycle_rules(rules: Sequence[Mapping[str, Any]]) -> list[str]:
    """What in ``rules`` real S3 would refuse, or bill as an early deletion; empty when nothing.

    Checks: rule IDs unique and at most 255 characters, a Status, exactly one of Filter and
    (legacy) Prefix, at least one action ([A]); transitions by Days only, down S3's
    waterfall, on distinct days, IA classes no earlier than day 30 and nothing leaving an
    IA class within 30 days ([T]); Expiration after the last transition (S3's
    InvalidArgument) and no earlier than that class's minimum storage duration ([C]).
    """
    problems: list[str] = []
    ids = [rule.get("ID") for rule in rules]
    problems.extend(f"rule ID {rule_id!r} is used by more than one rule" for rule_id in _duplicates(ids))
    for index, rule in enumerate(rules):
        name = rule.get("ID") or f"rule #{index}"
        problems.extend(f"{name}: {problem}" for problem in _check_rule(rule))
    return problems


def _duplicates(ids: Sequence[object]) -> list[object]:
    seen: set[object] = set()
    repeated: list[object] = []
    for rule_id in ids:
        if rule_id is not None and rule_id in seen and rule_id not in repeated:
            repeated.append(rule_id)
        seen.add(rule_id)
    return repeated


def _check_rule(rule: Mapping[str, Any]) -> list[str]:
    problems: list[str] = []
    if len(str(rule.get("ID", ""))) > MAX_RULE_ID_CHARS:
        problems.append(f"ID is longer than {MAX_RULE_ID_CHARS} characters")
    if rule.get("Status") not in ("Enabled", "Disabled"):
        problems.append("Status must be Enabled or Disabled")
    if ("Filter" in rule) == ("Prefix" in rule):
        problems.append("needs exactly one of Filter and Prefix")
    if not any(action in rule for action in LIFECYCLE_ACTIONS):
        problems.append("has no action")
    transition_problems, transitions = _check_transitions(rule.get("Transitions", []))
    problems.extend(transition_problems)
    if "Expiration" in rule:
        problems.extend(_check_expiration(rule["Expiration"], transitions))
    return problems


def _check_transitions(transitions: Sequence[Mapping[str, Any]]) -> tuple[list[str], list[tuple[int, str]]]:
    """Problems of one rule's transitions, and its valid ones as (days, storage class) in order."""
    problems: list[str] = []
    timed: list[tuple[int, str]] = []
    for transition in transitions:
        storage_class, days = transition.get("StorageClass"), transition.get("Days")
        if storage_class not in TRANSITION_ORDER:
            problems.append(f"cannot transition to storage class {storage_class!r}")
        elif not isinstance(days, int) or isinstance(days, bool) or days < 0:
            problems.append(f"{storage_class} transition needs Days, a whole number >= 0 (Date is not used here)")
        else:
            if storage_class in IA_CLASSES and days < IA_MIN_DAYS:
                problems.append(f"{storage_class} at day {days}: S3 refuses IA transitions before day {IA_MIN_DAYS}")
            timed.append((days, storage_class))
    timed.sort()
    for (days, storage_class), (next_days, next_class) in itertools.pairwise(timed):
        if next_days == days:
            problems.append(f"{storage_class} and {next_class} are both at day {days}")
        elif TRANSITION_ORDER.index(next_class) <= TRANSITION_ORDER.index(storage_class):
            problems.append(
                f"{storage_class} (day {days}) -> {next_class} (day {next_days}) goes against S3's waterfall"
            )
        elif storage_class in IA_CLASSES and next_days - days < IA_MIN_DAYS:
            problems.append(
                f"{next_class} at day {next_days} is {next_days - days} days after {storage_class}: "
                f"S3 requires at least {IA_MIN_DAYS}"
            )
    return problems, timed


def _check_expiration(expiration: Mapping[str, Any], transitions: Sequence[tuple[int, str]]) -> list[str]:
    days = expiration.get("Days")
    if days is None:  # a Date, or ExpiredObjectDeleteMarker: not checked here
        return []
    if not isinstance(days, int) or isinstance(days, bool) or days < 1:
        return ["Expiration Days must be a whole number >= 1"]
    if not transitions:
        return []
    last_days, last_class = transitions[-1]
    if days <= last_days:
        return [f"expires at day {days}, not after its last transition ({last_class} at day {last_days})"]
    if days - last_days < MIN_STORAGE_DAYS[last_class]:
        return [
            f"expires {days - last_days} days after moving to {last_class}, whose minimum storage duration is "
            f"{MIN_STORAGE_DAYS[last_class]} days: S3 bills the rest as an early deletion"
        ]
    return []


def provision_bucket(settings: CommonSettings, client: SyncS3Client | None = None) -> str:
    """Create (or bring up to date) the bucket ``S3_BUCKET`` names; return its name.

    In this order: the bucket (in the settings' region), all public access blocked,
    object ownership BucketOwnerEnforced (ACLs off), default encryption SSE-S3 (AES256),
    the lifecycle rules of :func:`lifecycle_rules` for the settings' ``RAW_EXPIRE_DAYS``
    (settings other than :class:`BucketSettings` have none: ``raw/`` kept). A bucket we
    own already is fine (``BucketAlreadyOwnedByYou``, or in us-east-1 a plain success);
    its settings are put again, which repairs whatever was changed by hand. Raises ``ValueError`` when
    ``S3_BUCKET`` is unset or the lifecycle rules are ones S3 would refuse, and
    ``RuntimeError`` when another account owns a bucket of that name.
    """
    bucket = settings.s3_bucket
    if not bucket:
        raise ValueError("S3_BUCKET is not set: there is no bucket to provision")
    rules = lifecycle_rules(_raw_expire_days(settings))
    if problems := check_lifecycle_rules(rules):
        raise ValueError("lifecycle rules that real S3 would refuse or bill: " + "; ".join(problems))
    s3 = client or sync_client("s3", settings)
    _create_bucket(s3, bucket, settings.aws_default_region)
    s3.put_public_access_block(
        Bucket=bucket,
        PublicAccessBlockConfiguration={
            "BlockPublicAcls": True,
            "IgnorePublicAcls": True,
            "BlockPublicPolicy": True,
            "RestrictPublicBuckets": True,
        },
    )
    s3.put_bucket_ownership_controls(
        Bucket=bucket, OwnershipControls={"Rules": [{"ObjectOwnership": "BucketOwnerEnforced"}]}
    )
    # BucketKeyEnabled only matters for SSE-KMS (fewer KMS calls); with SSE-S3 it is inert
    # but keeps the bucket right if someone switches it to a KMS key.
    s3.put_bucket_encryption(
        Bucket=bucket,
        ServerSideEncryptionConfiguration={
            "Rules": [{"ApplyServerSideEncryptionByDefault": {"SSEAlgorithm": "AES256"}, "BucketKeyEnabled": True}]
        },
    )
    s3.put_bucket_lifecycle_configuration(
        Bucket=bucket,
        LifecycleConfiguration={"Rules": rules},
        TransitionDefaultMinimumObjectSize=TRANSITION_DEFAULT_MINIMUM_OBJECT_SIZE,
    )
    log.info("bucket %s: public access blocked, SSE-S3, lifecycle %s", bucket, [rule.get("ID") for rule in rules])
    return bucket


def _raw_expire_days(settings: CommonSettings) -> int | None:
    return settings.raw_expire_days if isinstance(settings, BucketSettings) else None


def _create_bucket(s3: SyncS3Client, bucket: str, region: str) -> None:
    try:
        if region == REGION_WITHOUT_LOCATION_CONSTRAINT:
            s3.create_bucket(Bucket=bucket)
        else:
            location = cast("BucketLocationConstraintType", region)
            s3.create_bucket(Bucket=bucket, CreateBucketConfiguration={"LocationConstraint": location})
    except s3.exceptions.BucketAlreadyOwnedByYou:
        log.info("bucket %s exists; settings put again", bucket)
        return
    except s3.exceptions.BucketAlreadyExists as exc:
        raise RuntimeError(f"bucket name {bucket!r} is taken by another AWS account; choose another S3_BUCKET") from exc
    log.info("created bucket %s in %s", bucket, region)


def main() -> int:
    """``scripts/setup_s3.py``: provision ``S3_BUCKET``; exit 2 when it is unset.

    Reads :class:`BucketSettings`, so a ``RAW_EXPIRE_DAYS`` it refuses stops the script
    with the settings' error before anything is created.
    """
    settings = BucketSettings()
    configure_logging(settings.log_level, settings.log_format)
    if not settings.s3_bucket:
        print("S3_BUCKET is not set: name the bucket in the environment or .env (see .env.example)", file=sys.stderr)
        return EXIT_NO_BUCKET
    bucket = provision_bucket(settings)
    rule_ids = ", ".join(str(rule.get("ID")) for rule in lifecycle_rules(settings.raw_expire_days))
    print(f"public access blocked, SSE-S3, lifecycle rules: {rule_ids}", file=sys.stderr)
    print(bucket)
    return 0
