"""The bucket setup operators run (scripts/setup_s3.py): secure, tiered as real S3 allows, idempotent.

Bucket tests talk to moto's server. moto does not enforce S3's lifecycle constraints, so
the lifecycle rules are also run through ``check_lifecycle_rules``, which is tested on
rule sets real S3 refuses so that it can fail.
"""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import pytest
from botocore.stub import Stubber

from src.common.aws import SyncS3Client, sync_client
from src.common.settings import BucketSettings, CommonSettings
from src.ops import bucket as bucket_setup
from src.ops.bucket import (
    ABORT_MULTIPART_AFTER_DAYS,
    GLACIER_AFTER_DAYS,
    STANDARD_IA_AFTER_DAYS,
    TRANSITION_DEFAULT_MINIMUM_OBJECT_SIZE,
    check_lifecycle_rules,
    lifecycle_rules,
    provision_bucket,
    tier_down_before,
)
from tests.paths import REPO_ROOT

ALL_BLOCKED = {
    "BlockPublicAcls": True,
    "IgnorePublicAcls": True,
    "BlockPublicPolicy": True,
    "RestrictPublicBuckets": True,
}
SSE_S3 = {"ApplyServerSideEncryptionByDefault": {"SSEAlgorithm": "AES256"}, "BucketKeyEnabled": True}


@pytest.fixture
def bucket_env(aws_env: str, monkeypatch: pytest.MonkeyPatch) -> str:
    """The embedded AWS, with an S3_BUCKET of this test's own; the bucket's name."""
    name = f"telemetry-test-{uuid.uuid4().hex[:10]}"
    monkeypatch.setenv("S3_BUCKET", name)
    return name


def s3() -> SyncS3Client:
    return sync_client("s3", CommonSettings())


def bucket_state(bucket: str) -> dict[str, Any]:
    """Everything the setup configures, as S3 reports it (response metadata dropped)."""
    client = s3()
    lifecycle = client.get_bucket_lifecycle_configuration(Bucket=bucket)
    return {
        "encryption": client.get_bucket_encryption(Bucket=bucket)["ServerSideEncryptionConfiguration"]["Rules"],
        "public_access": client.get_public_access_block(Bucket=bucket)["PublicAccessBlockConfiguration"],
        "ownership": client.get_bucket_ownership_controls(Bucket=bucket)["OwnershipControls"]["Rules"],
        "lifecycle": lifecycle["Rules"],
        "minimum_size": lifecycle.get("TransitionDefaultMinimumObjectSize"),
    }


# --- the bucket -------------------------------------------------------------------------


def test_bucket_is_created_encrypted_private_and_tiered(bucket_env: str) -> None:
    """A new bucket gets SSE-S3, all four public access blocks, ACLs off and our lifecycle rules."""
    assert provision_bucket(CommonSettings()) == bucket_env
    state = bucket_state(bucket_env)
    assert state["encryption"] == [SSE_S3]
    assert state["public_access"] == ALL_BLOCKED
    assert state["ownership"] == [{"ObjectOwnership": "BucketOwnerEnforced"}]
    assert state["lifecycle"] == lifecycle_rules()
    assert state["minimum_size"] == TRANSITION_DEFAULT_MINIMUM_OBJECT_SIZE
    assert check_lifecycle_rules(state["lifecycle"]) == []  # what the bucket holds, not only what we sent


def test_lifecycle_rules_are_the_seeds_plan_as_s3_allows_it() -> None:
    """raw/ and curated/: STANDARD_IA at 30 days, GLACIER at 90, never expired by default; every prefix:
    stale multipart uploads aborted."""
    rules = {rule["ID"]: rule for rule in lifecycle_rules()}
    assert list(rules) == [
        "raw-standard-ia-30d-glacier-90d",
        "curated-standard-ia-30d-glacier-90d",
        "abort-incomplete-multipart-uploads-7d",
    ]
    tier_down = [
        {"Days": STANDARD_IA_AFTER_DAYS, "StorageClass": "STANDARD_IA"},
        {"Days": GLACIER_AFTER_DAYS, "StorageClass": "GLACIER"},
    ]
    assert (STANDARD_IA_AFTER_DAYS, GLACIER_AFTER_DAYS) == (30, 90)
    raw = rules["raw-standard-ia-30d-glacier-90d"]
    assert raw["Filter"] == {"Prefix": "raw/"}
    assert raw["Transitions"] == tier_down
    assert "Expiration" not in raw  # RAW_EXPIRE_DAYS unset: raw readings are kept
    curated = rules["curated-standard-ia-30d-glacier-90d"]
    assert curated["Filter"] == {"Prefix": "curated/"}
    assert curated["Transitions"] == tier_down
    assert "Expiration" not in curated  # curated hours are never expired
    abort = rules["abort-incomplete-multipart-uploads-7d"]
    assert abort["Filter"] == {"Prefix": ""}
    assert abort["AbortIncompleteMultipartUpload"] == {"DaysAfterInitiation": ABORT_MULTIPART_AFTER_DAYS}
    assert not any(rule["Filter"].get("Prefix") == "aggregated/" for rule in rules.values())  # aggregates stay Standard
    assert lifecycle_rules() is not lifecycle_rules()  # a fresh list each call: nobody can edit the shared rules


def test_running_twice_changes_nothing(bucket_env: str) -> None:
    """The setup is idempotent: a second run succeeds and leaves every setting as the first run made it."""
    provision_bucket(CommonSettings())
    first = bucket_state(bucket_env)
    assert provision_bucket(CommonSettings()) == bucket_env
    assert bucket_state(bucket_env) == first


def test_running_again_repairs_a_bucket_changed_by_hand(bucket_env: str) -> None:
    """Lifecycle, encryption, public access block and ownership removed or loosened by hand are put back."""
    provision_bucket(CommonSettings())
    expected = bucket_state(bucket_env)
    client = s3()
    client.delete_bucket_lifecycle(Bucket=bucket_env)
    client.delete_bucket_encryption(Bucket=bucket_env)
    client.delete_public_access_block(Bucket=bucket_env)
    client.put_bucket_ownership_controls(
        Bucket=bucket_env, OwnershipControls={"Rules": [{"ObjectOwnership": "ObjectWriter"}]}
    )
    with pytest.raises(client.exceptions.ClientError):
        client.get_bucket_lifecycle_configuration(Bucket=bucket_env)
    provision_bucket(CommonSettings())
    assert bucket_state(bucket_env) == expected


def test_outside_us_east_1_the_bucket_gets_a_location_constraint_and_reruns(
    bucket_env: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Outside us-east-1 S3 needs a LocationConstraint, and a rerun meets BucketAlreadyOwnedByYou, which is fine."""
    monkeypatch.setenv("AWS_DEFAULT_REGION", "eu-west-1")
    provision_bucket(CommonSettings())
    assert s3().get_bucket_location(Bucket=bucket_env)["LocationConstraint"] == "eu-west-1"
    assert provision_bucket(CommonSettings()) == bucket_env  # moto answers BucketAlreadyOwnedByYou here, as S3 does
    assert bucket_state(bucket_env)["lifecycle"] == lifecycle_rules()


def test_a_bucket_name_taken_by_another_account_is_a_clear_error(bucket_env: str) -> None:
    """BucketAlreadyExists (another account owns the name) stops the setup with a message naming S3_BUCKET."""
    client = s3()
    with Stubber(client) as stubber:
        stubber.add_client_error("create_bucket", service_error_code="BucketAlreadyExists", http_status_code=409)
        with pytest.raises(RuntimeError, match="taken by another AWS account; choose another S3_BUCKET"):
            provision_bucket(CommonSettings(), client)
        stubber.assert_no_pending_responses()


def test_provisioning_without_a_bucket_name_is_refused(aws_env: str) -> None:
    """provision_bucket never guesses a name: unset S3_BUCKET is a ValueError."""
    with pytest.raises(ValueError, match="S3_BUCKET is not set"):
        provision_bucket(CommonSettings())


def test_rules_real_s3_would_refuse_never_reach_the_bucket(bucket_env: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Provisioning checks the rules before any call, so a bad edit fails here rather than on real S3."""
    monkeypatch.setattr(bucket_setup, "lifecycle_rules", lambda _raw_expire_days=None: BAD_SEED_LITERAL)
    with pytest.raises(ValueError, match="STANDARD_IA at day 7"):
        provision_bucket(CommonSettings())
    with pytest.raises(s3().exceptions.ClientError):  # nothing was created
        s3().head_bucket(Bucket=bucket_env)


# --- RAW_EXPIRE_DAYS ------------------------------------------------------------------------


def rules_by_prefix(rules: list[Any]) -> dict[str, Any]:
    return {rule["Filter"]["Prefix"]: rule for rule in rules}


def test_raw_expiry_reaches_the_bucket_and_passes_the_validator(
    bucket_env: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """RAW_EXPIRE_DAYS=200: raw/ keeps both transitions and expires at day 200; curated/ is untouched."""
    monkeypatch.setenv("RAW_EXPIRE_DAYS", "200")
    provision_bucket(BucketSettings())
    lifecycle = bucket_state(bucket_env)["lifecycle"]
    assert lifecycle == lifecycle_rules(200)
    assert check_lifecycle_rules(lifecycle) == []
    raw = rules_by_prefix(lifecycle)["raw/"]
    assert raw["ID"] == "raw-standard-ia-30d-glacier-90d-expire-200d"
    assert raw["Expiration"] == {"Days": 200}
    assert raw["Transitions"] == [
        {"Days": 30, "StorageClass": "STANDARD_IA"},
        {"Days": 90, "StorageClass": "GLACIER"},
    ]
    assert rules_by_prefix(lifecycle)["curated/"] == rules_by_prefix(lifecycle_rules())["curated/"]


def test_unsetting_raw_expiry_removes_it_from_the_bucket(bucket_env: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """The lifecycle is replaced whole: a rerun without RAW_EXPIRE_DAYS (or with it blank) puts back the plain rules."""
    monkeypatch.setenv("RAW_EXPIRE_DAYS", "7")
    provision_bucket(BucketSettings())
    assert "Expiration" in rules_by_prefix(bucket_state(bucket_env)["lifecycle"])["raw/"]
    monkeypatch.setenv("RAW_EXPIRE_DAYS", "")
    provision_bucket(BucketSettings())
    assert bucket_state(bucket_env)["lifecycle"] == lifecycle_rules()


@pytest.mark.parametrize(
    ("days", "rule_id", "transitions"),
    [
        (3, "raw-expire-3d", []),
        (7, "raw-expire-7d", []),
        (59, "raw-expire-59d", []),  # IA from day 30 would be billed its 30 days anyway
        (60, "raw-standard-ia-30d-expire-60d", [(30, "STANDARD_IA")]),
        (179, "raw-standard-ia-30d-expire-179d", [(30, "STANDARD_IA")]),  # 89 days in Glacier: billed 90
        (180, "raw-standard-ia-30d-glacier-90d-expire-180d", [(30, "STANDARD_IA"), (90, "GLACIER")]),
        (200, "raw-standard-ia-30d-glacier-90d-expire-200d", [(30, "STANDARD_IA"), (90, "GLACIER")]),
    ],
)
def test_raw_expiry_keeps_only_the_transitions_that_pay_off(
    days: int, rule_id: str, transitions: list[tuple[int, str]]
) -> None:
    """A transition stays only when the object then spends its new class's minimum storage duration there."""
    raw = rules_by_prefix(lifecycle_rules(days))["raw/"]
    assert raw["ID"] == rule_id
    assert raw["Expiration"] == {"Days": days}
    assert [(step["Days"], step["StorageClass"]) for step in raw.get("Transitions", [])] == transitions
    assert tier_down_before(days) == transitions


def test_every_raw_expiry_gives_rules_s3_accepts() -> None:
    """For every expiry from 1 to 400 days the generated rules pass the validator, and the IDs stay unique."""
    for days in range(1, 401):
        rules = lifecycle_rules(days)
        assert check_lifecycle_rules(rules) == [], days
        raw = rules_by_prefix(rules)["raw/"]
        assert raw["Expiration"] == {"Days": days}
        kept = raw.get("Transitions", [])
        assert len(kept) == (0 if days < 60 else 1 if days < 180 else 2), days  # nothing dropped needlessly


@pytest.mark.parametrize("value", ["1", "2", "0", "-30", "7.5", "a week"])
def test_raw_expiry_settings_refuse_what_s3_or_the_pipeline_cannot_use(
    value: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Below S3's 1 day, below the floor that leaves time to curate and prune, or not a whole number: refused."""
    monkeypatch.setenv("RAW_EXPIRE_DAYS", value)
    with pytest.raises(ValueError, match=r"(?i)raw_expire_days"):
        BucketSettings()


@pytest.mark.parametrize(("value", "days"), [("", None), ("  ", None), ("3", 3), ("365", 365)])
def test_raw_expiry_settings_accept_blank_and_the_floor(
    value: str, days: int | None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Blank means unset (raw/ kept forever); the floor itself and anything above it are accepted."""
    monkeypatch.setenv("RAW_EXPIRE_DAYS", value)
    assert BucketSettings().raw_expire_days == days
    assert BucketSettings.MIN_RAW_EXPIRE_DAYS == 3


@pytest.mark.parametrize("days", [0, -1, True, 7.5])
def test_lifecycle_rules_refuse_an_expiry_s3_refuses(days: Any) -> None:
    """Called directly, below 1 day (or not a whole number) is a ValueError naming RAW_EXPIRE_DAYS."""
    with pytest.raises(ValueError, match="RAW_EXPIRE_DAYS must be a whole number of days >= 1"):
        lifecycle_rules(days)


def test_settings_other_than_bucket_settings_keep_raw(bucket_env: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Only BucketSettings carry RAW_EXPIRE_DAYS: other settings (the embedded stack's) provision without expiry."""
    monkeypatch.setenv("RAW_EXPIRE_DAYS", "30")
    provision_bucket(CommonSettings())
    assert bucket_state(bucket_env)["lifecycle"] == lifecycle_rules()


# --- the script ---------------------------------------------------------------------------


def test_main_prints_the_bucket_last_and_exits_0(bucket_env: str, capsys: pytest.CaptureFixture[str]) -> None:
    """``python scripts/setup_s3.py`` prints the bucket name as its last stdout line, like setup_sqs.py its URL."""
    assert bucket_setup.main() == 0
    captured = capsys.readouterr()
    assert captured.out.splitlines()[-1] == bucket_env
    assert "raw-standard-ia-30d-glacier-90d, curated-standard-ia-30d-glacier-90d" in captured.err
    assert bucket_state(bucket_env)["lifecycle"] == lifecycle_rules()


def test_main_applies_and_prints_the_raw_expiry(
    bucket_env: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """RAW_EXPIRE_DAYS in the environment reaches the bucket through main(), and its rule ID is printed."""
    monkeypatch.setenv("RAW_EXPIRE_DAYS", "60")
    assert bucket_setup.main() == 0
    captured = capsys.readouterr()
    assert "raw-standard-ia-30d-expire-60d, curated-standard-ia-30d-glacier-90d" in captured.err
    assert bucket_state(bucket_env)["lifecycle"] == lifecycle_rules(60)


def test_main_refuses_a_bad_raw_expiry_before_creating_anything(
    bucket_env: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """RAW_EXPIRE_DAYS=1 stops the script with the settings' error; no bucket is created."""
    monkeypatch.setenv("RAW_EXPIRE_DAYS", "1")
    with pytest.raises(ValueError, match="RAW_EXPIRE_DAYS \\(1\\) must be at least 3"):
        bucket_setup.main()
    with pytest.raises(s3().exceptions.ClientError):
        s3().head_bucket(Bucket=bucket_env)


def test_main_without_s3_bucket_exits_2_with_a_message(aws_env: str, capsys: pytest.CaptureFixture[str]) -> None:
    """Unset S3_BUCKET: exit status 2, nothing on stdout, and stderr says which variable to set."""
    assert bucket_setup.main() == bucket_setup.EXIT_NO_BUCKET == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert "S3_BUCKET is not set" in captured.err


def test_the_contract_command_runs_from_a_checkout(bucket_env: str, isolated_env: Path) -> None:
    """The contract's command itself, ``python scripts/setup_s3.py``, run twice from another directory."""
    for _ in range(2):
        result = subprocess.run(
            [sys.executable, str(REPO_ROOT / "scripts" / "setup_s3.py")],
            cwd=isolated_env,
            env=dict(os.environ),
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert result.returncode == 0, result.stderr
        assert result.stdout.splitlines()[-1] == bucket_env


# --- the validator --------------------------------------------------------------------------


def rule(rule_id: str = "r", **fields: Any) -> dict[str, Any]:
    """A valid-looking rule on ``data/`` with ``fields`` added or replaced."""
    return {"ID": rule_id, "Status": "Enabled", "Filter": {"Prefix": "data/"}, **fields}


def transitions(*pairs: tuple[int, str]) -> list[dict[str, Any]]:
    return [{"Days": days, "StorageClass": storage_class} for days, storage_class in pairs]


# The seed's plan taken literally: IA after 7 days, Glacier 10 days after IA.
BAD_SEED_LITERAL: list[Any] = [rule("seed", Transitions=transitions((7, "STANDARD_IA"), (17, "GLACIER")))]


def test_validator_accepts_our_rules() -> None:
    """The rules the setup applies pass every documented S3 constraint."""
    assert check_lifecycle_rules(lifecycle_rules()) == []


def test_validator_flags_the_seeds_plan_taken_literally() -> None:
    """IA at 7 days and Glacier 10 days after IA: both are refused by real S3, and both are reported."""
    assert check_lifecycle_rules(BAD_SEED_LITERAL) == [
        "seed: STANDARD_IA at day 7: S3 refuses IA transitions before day 30",
        "seed: GLACIER at day 17 is 10 days after STANDARD_IA: S3 requires at least 30",
    ]


def test_validator_accepts_a_documented_good_rule_set() -> None:
    """S3's own tiering example (IA 30, Glacier 90, expire 365) and rules S3 accepts pass."""
    good = [
        rule("tier-down", Transitions=transitions((30, "STANDARD_IA"), (90, "GLACIER")), Expiration={"Days": 365}),
        rule("archive-now", Prefix="logs/", Transitions=transitions((0, "GLACIER"))),
        rule("expire-only", Expiration={"Days": 1}),
        rule("expire-on-date", Transitions=transitions((0, "GLACIER_IR")), Expiration={"Date": "2030-01-01"}),
        rule("deep", Transitions=transitions((0, "GLACIER_IR"), (90, "DEEP_ARCHIVE")), Expiration={"Days": 270}),
    ]
    del good[1]["Filter"]  # the legacy rule-level Prefix instead of a Filter
    assert check_lifecycle_rules(good) == []


@pytest.mark.parametrize(
    ("rules", "problem"),
    [
        ([rule("twice", Expiration={"Days": 5}), rule("twice", Expiration={"Days": 6})], "rule ID 'twice' is used by"),
        ([rule("x" * 256, Expiration={"Days": 5})], "ID is longer than 255 characters"),
        ([rule(Status="On", Expiration={"Days": 5})], "Status must be Enabled or Disabled"),
        ([rule(Prefix="data/", Expiration={"Days": 5})], "needs exactly one of Filter and Prefix"),
        ([{"Status": "Enabled", "Expiration": {"Days": 5}}], "rule #0: needs exactly one of Filter and Prefix"),
        ([rule()], "has no action"),
        ([rule(Transitions=transitions((30, "REDUCED_REDUNDANCY")))], "cannot transition to storage class"),
        ([rule(Transitions=[{"Date": "2030-01-01", "StorageClass": "GLACIER"}])], "GLACIER transition needs Days"),
        ([rule(Transitions=transitions((-1, "GLACIER")))], "GLACIER transition needs Days"),
        ([rule(Transitions=transitions((29, "ONEZONE_IA")))], "ONEZONE_IA at day 29: S3 refuses"),
        ([rule(Transitions=transitions((90, "GLACIER"), (90, "DEEP_ARCHIVE")))], "are both at day 90"),
        ([rule(Transitions=transitions((30, "GLACIER"), (60, "STANDARD_IA")))], "goes against S3's waterfall"),
        ([rule(Transitions=transitions((30, "GLACIER"), (60, "GLACIER")))], "goes against S3's waterfall"),
        ([rule(Transitions=transitions((30, "STANDARD_IA"), (59, "GLACIER_IR")))], "29 days after STANDARD_IA"),
        ([rule(Expiration={"Days": 0})], "Expiration Days must be a whole number >= 1"),
        ([rule(Transitions=transitions((30, "STANDARD_IA")), Expiration={"Days": 30})], "not after its last"),
        (
            [rule(Transitions=transitions((30, "STANDARD_IA"), (90, "GLACIER")), Expiration={"Days": 120})],
            "expires 30 days after moving to GLACIER, whose minimum storage duration is 90 days",
        ),
    ],
)
def test_validator_flags_what_s3_refuses_or_bills(rules: list[dict[str, Any]], problem: str) -> None:
    """Each documented constraint, broken on its own, is reported (and only that one)."""
    found = check_lifecycle_rules(rules)
    assert len(found) == 1, found
    assert problem in found[0]
