"""Settings (contract.md, "Environment"): defaults, ``.env`` in the working directory, env vars winning."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from src.common.settings import (
    AggregatorSettings,
    CommonSettings,
    ConsumerSettings,
    GeneratorSettings,
    ReceiverSettings,
)


@pytest.fixture
def no_data_dir(monkeypatch: pytest.MonkeyPatch) -> None:
    """``isolated_env`` points DATA_DIR at the test's directory; some tests need it unset."""
    monkeypatch.delenv("DATA_DIR", raising=False)


def write_env(directory: Path, text: str) -> None:
    (directory / ".env").write_text(text, encoding="utf-8")


# --- defaults -------------------------------------------------------------------------


@pytest.mark.usefixtures("no_data_dir")
def test_common_defaults_match_the_contract_table() -> None:
    settings = CommonSettings()
    assert settings.sqs_queue_name == "telemetry-queue-dev"
    assert settings.data_dir == Path("data")
    assert settings.log_level == "INFO"
    assert settings.sqs_queue_url is None
    assert settings.s3_bucket is None
    assert settings.aws_endpoint_url is None  # unset means real AWS
    assert settings.aws_default_region == "us-east-1"
    assert settings.aws_access_key_id is None
    assert settings.aws_secret_access_key is None


@pytest.mark.usefixtures("no_data_dir")
def test_consumer_defaults_match_the_contract_table() -> None:
    settings = ConsumerSettings()
    assert settings.batch_size == 100
    assert settings.batch_timeout_s == 2
    assert settings.file_rotation_mb == 5
    assert settings.log_level == "INFO"
    assert settings.wait_time_s == 20
    assert settings.writer_id is None


def test_receiver_freshness_defaults_match_the_contract() -> None:
    settings = ReceiverSettings(api_key="k")
    assert settings.max_clock_skew_s == 300
    assert settings.max_reading_age_h == 168


def test_environment_variables_set_values_case_insensitively(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SQS_QUEUE_NAME", "q-prod")
    monkeypatch.setenv("BATCH_SIZE", "250")
    monkeypatch.setenv("BATCH_TIMEOUT_S", "0.5")
    monkeypatch.setenv("FILE_ROTATION_MB", "1.5")
    monkeypatch.setenv("S3_BUCKET", "telemetry-raw")
    monkeypatch.setenv("WRITER_ID", "w_1")
    settings = ConsumerSettings()
    assert settings.sqs_queue_name == "q-prod"
    assert settings.batch_size == 250
    assert settings.batch_timeout_s == 0.5
    assert settings.file_rotation_mb == 1.5
    assert settings.s3_bucket == "telemetry-raw"
    assert settings.writer_id == "w_1"


@pytest.mark.parametrize(("name", "value"), [("BATCH_SIZE", "0"), ("BATCH_TIMEOUT_S", "-1"), ("FILE_ROTATION_MB", "0")])
def test_consumer_refuses_non_positive_tuning(monkeypatch: pytest.MonkeyPatch, name: str, value: str) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(ValidationError, match=name.lower()):
        ConsumerSettings()


@pytest.mark.parametrize("writer_id", ["a-b", "a/b", "x" * 33])
def test_consumer_refuses_writer_id_that_batch_file_names_cannot_carry(
    monkeypatch: pytest.MonkeyPatch, writer_id: str
) -> None:
    monkeypatch.setenv("WRITER_ID", writer_id)
    with pytest.raises(ValidationError, match="writer_id"):
        ConsumerSettings()


def test_settings_are_frozen() -> None:
    settings = CommonSettings()
    with pytest.raises(ValidationError):
        settings.sqs_queue_name = "other"  # type: ignore[misc]


# --- .env -----------------------------------------------------------------------------


@pytest.mark.usefixtures("no_data_dir")
def test_dotenv_in_the_working_directory_is_read(isolated_env: Path) -> None:
    write_env(
        isolated_env,
        "AWS_ENDPOINT_URL=http://127.0.0.1:4566\n"
        "AWS_ACCESS_KEY_ID=dummy\n"
        "AWS_SECRET_ACCESS_KEY=dummy-secret\n"
        "SQS_QUEUE_NAME=from-dotenv\n"
        "DATA_DIR=/srv/telemetry\n"
        "LOG_LEVEL=DEBUG\n"
        "BATCH_SIZE=7\n"
        "SOMETHING_ELSE=ignored\n",
    )
    settings = ConsumerSettings()
    assert settings.aws_endpoint_url == "http://127.0.0.1:4566"
    assert settings.aws_access_key_id == "dummy"
    assert settings.aws_secret_access_key is not None
    assert settings.aws_secret_access_key.get_secret_value() == "dummy-secret"
    assert settings.sqs_queue_name == "from-dotenv"
    assert settings.data_dir == Path("/srv/telemetry")
    assert settings.log_level == "DEBUG"
    assert settings.batch_size == 7


def test_real_environment_variables_win_over_dotenv(isolated_env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write_env(isolated_env, "SQS_QUEUE_NAME=from-dotenv\nBATCH_SIZE=7\nAPI_KEY=dotenv-key\n")
    monkeypatch.setenv("SQS_QUEUE_NAME", "from-env")
    monkeypatch.setenv("API_KEY", "env-key")
    assert ConsumerSettings().sqs_queue_name == "from-env"
    assert ConsumerSettings().batch_size == 7  # what the environment does not set still comes from .env
    assert ReceiverSettings().api_keys == ("env-key",)


def test_dotenv_elsewhere_than_the_working_directory_is_not_read(
    isolated_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    elsewhere = isolated_env / "elsewhere"
    elsewhere.mkdir()
    write_env(isolated_env, "SQS_QUEUE_NAME=from-dotenv\n")
    monkeypatch.chdir(elsewhere)
    assert CommonSettings().sqs_queue_name == "telemetry-queue-dev"


@pytest.mark.parametrize("blank", ["", "   "])
def test_blank_aws_endpoint_url_means_unset(isolated_env: Path, monkeypatch: pytest.MonkeyPatch, blank: str) -> None:
    monkeypatch.setenv("AWS_ENDPOINT_URL", blank)
    assert CommonSettings().aws_endpoint_url is None
    monkeypatch.delenv("AWS_ENDPOINT_URL")
    write_env(isolated_env, f"AWS_ENDPOINT_URL={blank}\n")
    assert CommonSettings().aws_endpoint_url is None


@pytest.mark.parametrize("name", ["SQS_QUEUE_URL", "S3_BUCKET", "AWS_ACCESS_KEY_ID"])
def test_other_blank_optional_values_mean_unset(monkeypatch: pytest.MonkeyPatch, name: str) -> None:
    monkeypatch.setenv(name, "")
    assert getattr(CommonSettings(), name.lower()) is None


# --- API keys -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "keys"),
    [
        ("only", ("only",)),
        ("new,old", ("new", "old")),
        (" new , old ,", ("new", "old")),
        ("a,,b", ("a", "b")),
    ],
)
def test_api_key_comma_list_becomes_api_keys(
    monkeypatch: pytest.MonkeyPatch, value: str, keys: tuple[str, ...]
) -> None:
    monkeypatch.setenv("API_KEY", value)
    assert ReceiverSettings().api_keys == keys


def test_api_key_is_secret_in_repr(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("API_KEY", "super-secret")
    assert "super-secret" not in repr(ReceiverSettings())


def test_receiver_refuses_to_start_without_api_key() -> None:
    with pytest.raises(ValidationError, match="api_key"):
        ReceiverSettings()


@pytest.mark.parametrize("value", ["", "   ", ",", " , ,, "])
def test_receiver_refuses_api_key_of_only_commas_or_blanks(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    monkeypatch.setenv("API_KEY", value)
    with pytest.raises(ValidationError, match="API_KEY holds no key"):
        ReceiverSettings()


def test_receiver_reads_api_key_from_dotenv(isolated_env: Path) -> None:
    write_env(isolated_env, "API_KEY=k1,k2\n")
    assert ReceiverSettings().api_keys == ("k1", "k2")


def test_generator_first_api_key_is_the_first_of_the_list(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("API_KEY", " new , old")
    assert GeneratorSettings().first_api_key == "new"


def test_generator_first_api_key_is_none_without_a_key() -> None:
    assert GeneratorSettings().first_api_key is None


@pytest.mark.parametrize("value", ["", ",", " , "])
def test_generator_first_api_key_is_none_for_blank_lists(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    monkeypatch.setenv("API_KEY", value)
    assert GeneratorSettings().first_api_key is None


def test_generator_receiver_url_default_and_override(monkeypatch: pytest.MonkeyPatch) -> None:
    assert GeneratorSettings().receiver_url == "http://127.0.0.1:8000"
    monkeypatch.setenv("RECEIVER_URL", "http://receiver:9000")
    assert GeneratorSettings().receiver_url == "http://receiver:9000"


# --- derived names and paths ----------------------------------------------------------


def test_dlq_name_is_queue_name_with_dlq_suffix(monkeypatch: pytest.MonkeyPatch) -> None:
    assert CommonSettings().dlq_name == "telemetry-queue-dev-dlq"
    monkeypatch.setenv("SQS_QUEUE_NAME", "q-prod")
    assert CommonSettings().dlq_name == "q-prod-dlq"


def test_raw_and_aggregated_dirs_live_under_data_dir(isolated_env: Path) -> None:
    settings = AggregatorSettings()
    assert settings.data_dir == isolated_env / "data"
    assert settings.raw_dir == isolated_env / "data" / "raw"
    assert settings.aggregated_dir == isolated_env / "data" / "aggregated"


@pytest.mark.usefixtures("no_data_dir")
def test_default_data_dir_is_relative_data() -> None:
    settings = CommonSettings()
    assert settings.raw_dir == Path("data/raw")
    assert settings.aggregated_dir == Path("data/aggregated")
