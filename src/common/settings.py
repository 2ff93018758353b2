"""Typed settings, one object per process, read once at start.

Values come from the environment and from ``.env`` in the working directory (real
environment variables win). Each service gets a subclass with only what it needs, so a
misconfigured process fails at start with a clear message rather than midway.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, ClassVar

from pydantic import BeforeValidator, Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from src.common.logs import LogFormat


def _blank_is_unset(value: object) -> object:
    """``FOO=`` in .env or the environment means "not set", not an empty string or a parse error."""
    return None if isinstance(value, str) and not value.strip() else value


Unset = BeforeValidator(_blank_is_unset)
"""Marks an optional setting whose blank value means unset: ``Annotated[str | None, Unset]``."""


class CommonSettings(BaseSettings):
    """What every process needs: where AWS is, which queue, where data lives."""

    model_config = SettingsConfigDict(env_file=".env", env_file_encoding="utf-8", extra="ignore", frozen=True)

    aws_endpoint_url: Annotated[str | None, Unset] = Field(None, description="Unset means real AWS; moto locally")
    aws_default_region: str = "us-east-1"
    aws_access_key_id: Annotated[str | None, Unset] = None
    aws_secret_access_key: SecretStr | None = None
    sqs_queue_url: Annotated[str | None, Unset] = Field(None, description="If unset, resolved from sqs_queue_name")
    sqs_queue_name: str = "telemetry-queue-dev"
    data_dir: Path = Path("data")
    s3_bucket: Annotated[str | None, Unset] = Field(None, description="Enables the S3 tier when set")
    log_level: str = "INFO"
    log_format: LogFormat = Field("text", description="text for people, json (one object per line) for collectors")

    @property
    def dlq_name(self) -> str:
        return f"{self.sqs_queue_name}-dlq"

    @property
    def raw_dir(self) -> Path:
        return self.data_dir / "raw"

    @property
    def curated_dir(self) -> Path:
        return self.data_dir / "curated"

    @property
    def aggregated_dir(self) -> Path:
        return self.data_dir / "aggregated"


class QueueSettings(CommonSettings):
    """The queue's attributes: ``setup_sqs.py`` gives them to the queue, the consumer relies on them."""

    visibility_timeout_s: int = Field(
        30, ge=1, le=43_200, description="VisibilityTimeout; the consumer extends held messages to it"
    )
    wait_time_s: int = Field(20, ge=0, le=20, description="ReceiveMessageWaitTimeSeconds and the consumer's long poll")
    queue_retention_s: int = Field(345_600, ge=60, le=1_209_600, description="MessageRetentionPeriod (4 days)")
    max_receives: int = Field(5, ge=1, le=1_000, description="Receives before SQS moves a message to the DLQ")
    dlq_retention_s: int = Field(
        1_209_600, ge=60, le=1_209_600, description="The DLQ's retention: SQS's maximum, dead letters wait for a human"
    )


class BucketSettings(CommonSettings):
    """The bucket setup (``scripts/setup_s3.py``): what its lifecycle rules depend on.

    ``RAW_EXPIRE_DAYS`` unset (the default) keeps ``raw/`` forever. Set, S3 deletes each
    ``raw/`` object that many days after its upload, whether or not its hour has been
    curated: the rule is by object age, so the floor leaves the hourly jobs time to
    catch up (docs/architecture.md, "Why these lifecycle rules").
    """

    MIN_RAW_EXPIRE_DAYS: ClassVar[int] = 3

    raw_expire_days: Annotated[int | None, Unset] = Field(
        None, description="Days after upload at which S3 deletes a raw/ object; unset keeps raw/ forever"
    )

    @field_validator("raw_expire_days")
    @classmethod
    def _expiry_leaves_time_to_curate(cls, days: int | None) -> int | None:
        if days is not None and days < cls.MIN_RAW_EXPIRE_DAYS:
            raise ValueError(
                f"RAW_EXPIRE_DAYS ({days}) must be at least {cls.MIN_RAW_EXPIRE_DAYS}: S3 deletes raw/ objects by "
                "age, whether or not their hour is curated yet or their local copy pruned (after 48 h); "
                "leave it unset to keep raw/ forever"
            )
        return days


class ReceiverSettings(CommonSettings):
    """The HTTP receiver: who may post, what a reading may look like, how long SQS may take."""

    api_key: SecretStr = Field(description="Accepted key, or a comma-separated list for rotation")
    max_clock_skew_s: float = Field(300.0, gt=0)
    max_reading_age_h: float = Field(168.0, gt=0)
    max_reading_bytes: int = Field(16_384, gt=0, description="Body limit of POST /ingest")
    max_batch_bytes: int = Field(1_048_576, gt=0, description="Body limit of POST /ingest/batch")
    max_batch_readings: int = Field(1_000, gt=0)
    sqs_timeout_s: float = Field(5.0, gt=0, description="Bound on one publish, retries included")

    @property
    def api_keys(self) -> tuple[str, ...]:
        return tuple(key.strip() for key in self.api_key.get_secret_value().split(",") if key.strip())

    @field_validator("api_key")
    @classmethod
    def _at_least_one_key(cls, value: SecretStr) -> SecretStr:
        if not any(key.strip() for key in value.get_secret_value().split(",")):
            raise ValueError("API_KEY holds no key")
        return value


class ConsumerSettings(QueueSettings):
    """The batch consumer: when a batch flushes and how big a file may grow."""

    batch_size: int = Field(100, gt=0, description="Readings that trigger a flush")
    batch_timeout_s: float = Field(2.0, gt=0, description="Flush this long after a batch's first reading")
    file_rotation_mb: float = Field(5.0, gt=0, description="Largest batch file; bigger flushes are split")
    receive_concurrency: int = Field(4, gt=0, description="Long polls kept in flight at once")
    writer_id: Annotated[str | None, Unset] = Field(
        None, pattern=r"^[A-Za-z0-9_]{1,32}$", description="File name suffix; random per process if unset"
    )
    visibility_beat_s: Annotated[float | None, Unset] = Field(
        None, gt=0, description="How often held messages are checked for extension; a sixth of the timeout if unset"
    )
    s3_gzip: bool = Field(True, description="Upload raw batch files gzip-compressed (key ends .gz)")
    s3_upload_concurrency: int = Field(4, gt=0, le=64, description="Uploads to S3 in flight at once")
    metrics_port: int = Field(9102, ge=0, le=65_535, description="Port of the consumer's /metrics; 0 disables it")

    @model_validator(mode="after")
    def _beat_fits_the_timeout(self) -> ConsumerSettings:
        if self.visibility_beat_s is not None and self.visibility_beat_s >= self.visibility_timeout_s / 4:
            raise ValueError(
                f"VISIBILITY_BEAT_S ({self.visibility_beat_s}) must be below a quarter of "
                f"VISIBILITY_TIMEOUT_S ({self.visibility_timeout_s}), or messages reappear before they are extended"
            )
        return self

    @property
    def heartbeat_s(self) -> float:
        """Seconds between two visibility checks (``visibility_beat_s`` or a sixth of the timeout)."""
        return self.visibility_beat_s if self.visibility_beat_s is not None else self.visibility_timeout_s / 6


class AggregatorSettings(CommonSettings):
    """The hourly job: how much memory its SQL engine may take before it spills to disk, and the
    thresholds of its battery analytics (``ANALYTICS_*``)."""

    duckdb_memory_limit_mb: int = Field(
        512, ge=64, description="DuckDB's memory limit; beyond it, work spills under DATA_DIR/curated/_spill"
    )
    spark_master: Annotated[str | None, Unset] = Field(
        None, description="--engine spark: the cluster's master URL; unset means spark-submit's master, or local[*]"
    )

    # Battery analytics (src/aggregator/analytics.py): every default and its source is in docs/battery-analytics.md.
    analytics_enabled: bool = Field(True, description="Add the per-vehicle analytics block to the hourly aggregate")
    analytics_gap_s: float = Field(
        5.0, gt=0, description="Readings further apart than this are a gap: never bridged (25 x 200 ms, 5 x 1 s)"
    )
    analytics_rest_current_a: float = Field(
        0.5, ge=0, description="|current| at or below this is rest; above it, charging (+) or discharging (-)"
    )
    analytics_rest_min_s: float = Field(
        300.0, ge=0, description="At rest this long (no gap) before a reading counts for the at-rest cell spread"
    )
    analytics_temp_warning_c: float = Field(45.0, description="cell_temp_max above this: minutes above warning")
    analytics_temp_critical_c: float = Field(60.0, description="cell_temp_max above this: minutes above critical")
    analytics_session_merge_s: float = Field(
        60.0, gt=0, description="Charging readings at most this far apart, with no discharge between, are one session"
    )
    analytics_session_min_s: float = Field(
        120.0, ge=0, description="A charging session lasts at least this long (regenerative braking does not)"
    )
    analytics_step_current_a: float = Field(
        20.0, gt=0, description="Resistance: |ΔI| between consecutive readings of at least this is a current step"
    )
    analytics_step_max_dt_s: float = Field(
        1.5, gt=0, description="Resistance: a step's two readings at most this far apart (one sampling period)"
    )
    analytics_step_min_soc_pct: float = Field(
        30.0, ge=0, le=100, description="Resistance: steps below this SOC are left out (resistance rises near empty)"
    )
    analytics_min_steps: int = Field(10, ge=1, description="Resistance: fewer steps than this give no estimate")
    analytics_activation_energy_j_per_mol: float = Field(
        28_000.0, ge=0, description="Resistance: Arrhenius activation energy normalising each step to 25 °C"
    )
    analytics_rc_ratio: float = Field(
        0.6, ge=0, description="Resistance: R1/R0 of the diffusion RC pair whose charging within a step is removed"
    )
    analytics_rc_tau_s: float = Field(40.0, gt=0, description="Resistance: time constant of that RC pair (s)")
    analytics_capacity_min_swing_pct: float = Field(
        20.0, gt=0, le=100, description="Capacity: the SOC swing (points, without a gap) an estimate needs"
    )
    analytics_cells_in_series: int = Field(96, ge=1, description="Cells in series: pack voltage vs its cells")
    analytics_pack_voltage_tolerance_v: float = Field(
        0.1, ge=0, description="Pack voltage vs n x cell min/max: the DBC's rounding, 0.05 V + 96 x 0.5 mV, rounded up"
    )
    analytics_module_lag_c: float = Field(
        4.0,
        gt=0,
        description="Module lag: min(cell spread, hottest above 30 °C or coldest below 10 °C) at this",
    )
    analytics_ocv_curve_v: tuple[float, ...] = Field(
        (3.300, 3.450, 3.530, 3.580, 3.610, 3.630, 3.650, 3.670, 3.690, 3.710, 3.740,
         3.770, 3.810, 3.850, 3.890, 3.930, 3.970, 4.010, 4.060, 4.110, 4.170),
        min_length=2,
        description="Cell OCV (V, rising) on a uniform SOC grid 0..100 %: reads an at-rest cell's SOC off its voltage",
    )  # fmt: skip

    # Daily fleet health (src/aggregator/fleet_health.py): defaults and sources in docs/battery-analytics.md.
    fleet_registry: Annotated[Path | None, Unset] = Field(
        None, description='JSON {"<vehicle_id>": {"nominal_capacity_ah": N}}; unset: nominal inferred (60/94/120 Ah)'
    )
    alert_imbalance_soc_pct: float = Field(
        10.0, gt=0, description="cell_imbalance: at-rest SOC spread of the cells (P50 of a rest hour) at this, points"
    )
    alert_imbalance_critical_soc_pct: float = Field(20.0, gt=0, description="cell_imbalance: critical at this")
    alert_self_discharge_mv_per_h: float = Field(
        2.0, gt=0, description="self_discharge: at-rest cell spread growing this fast within a rest stretch"
    )
    alert_self_discharge_min_rest_s: float = Field(
        900.0, ge=0, description="self_discharge: rest (in stretches of 600 s or more) an hour needs to count"
    )
    alert_weak_cell_sag_ratio: float = Field(
        1.6, gt=1, description="weak_cell: the lowest cell's ΔV/ΔI over the average cell's, on discharge steps"
    )
    alert_weak_cell_critical_ratio: float = Field(2.5, gt=1, description="weak_cell: critical at or above this")
    alert_cooling_lag_s: float = Field(
        120.0, gt=0, description="cooling_fault: seconds in the day a module lagged (ANALYTICS_MODULE_LAG_C) under pump"
    )
    alert_sensor_fraction: float = Field(
        0.01, gt=0, le=1, description="sensor_inconsistency: share of an hour's readings outside the cells' range"
    )
    alert_over_temperature_minutes: float = Field(
        1.0, ge=0, description="over_temperature: minutes above ANALYTICS_TEMP_WARNING_C (critical: any above CRITICAL)"
    )


class GeneratorSettings(CommonSettings):
    """The simulator: where to send and with which key."""

    api_key: SecretStr | None = None
    receiver_url: str = "http://127.0.0.1:8000"

    @property
    def first_api_key(self) -> str | None:
        if self.api_key is None:
            return None
        keys = [key.strip() for key in self.api_key.get_secret_value().split(",") if key.strip()]
        return keys[0] if keys else None


class DashboardSettings(CommonSettings):
    """The read-only dashboard (``src/dashboard``): what it scrapes, how often, and its optional token.

    It reads the queue's attributes (``SQS_QUEUE_URL``/``SQS_QUEUE_NAME``) and this hour's
    batch files under ``DATA_DIR``; nothing it shows comes from a secret.
    """

    dashboard_token: Annotated[SecretStr | None, Unset] = Field(
        None, description="When set, every page and API call needs it (?token= once, then a cookie, or a header)"
    )
    receiver_url: str = Field("http://127.0.0.1:8000", description="The receiver; its /metrics is scraped")
    receiver_metrics_url: Annotated[str | None, Unset] = Field(
        None, description="The receiver's Prometheus text; RECEIVER_URL + /metrics if unset"
    )
    consumer_metrics_urls: str = Field(
        "http://127.0.0.1:9102/metrics", description="Each consumer's /metrics (METRICS_PORT), comma-separated"
    )
    dashboard_refresh_s: float = Field(2.0, ge=0.2, le=60, description="Seconds between scrapes and page refreshes")
    dashboard_window_s: float = Field(
        300.0, ge=10, le=3_600, description="Span of the charts and of the latency percentiles (kept in memory)"
    )
    dashboard_scrape_timeout_s: float = Field(2.0, gt=0, le=30, description="Bound on one scrape or SQS call")
    dashboard_fleet_idle_s: float = Field(
        60.0, gt=0, le=3_600, description="Fleet page: stop reading batch files this long after the last live request"
    )
    dashboard_vehicle_points: int = Field(
        1000, ge=50, le=10_000, description="Vehicle page: at most this many points per chart (min/max buckets beyond)"
    )
    dashboard_vehicle_max_window_h: float = Field(
        168.0, gt=0, le=744, description="Vehicle page: the longest window one may ask for, in hours"
    )
    dashboard_vehicle_health_days: int = Field(
        30, ge=1, le=366, description="Vehicle page: days of fleet-health documents in the health trend and alerts"
    )

    @property
    def receiver_metrics(self) -> str:
        return self.receiver_metrics_url or f"{self.receiver_url.rstrip('/')}/metrics"

    @property
    def consumer_metrics(self) -> tuple[str, ...]:
        return tuple(url.strip() for url in self.consumer_metrics_urls.split(",") if url.strip())
