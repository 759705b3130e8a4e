"""Typed settings, read once from the environment (see the README's configuration table)."""

from __future__ import annotations

import json
from typing import Annotated, Any, Literal

from pydantic import AliasChoices, BaseModel, Field, TypeAdapter, ValidationError, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from taskcore.usage.budgets import BudgetsConfig

Role = Literal["user", "admin"]
Tier = Literal["free", "paid"]


# Teams one caller may belong to (an API key's list, a JWT's claim): each listing reads
# one index range per team.
MAX_TEAMS = 100


class ApiKey(BaseModel):
    user_id: str = Field(min_length=1)
    role: Role = "user"
    tier: Tier = "paid"
    teams: list[str] = Field(default_factory=list, max_length=MAX_TEAMS)


_API_KEYS: TypeAdapter[dict[str, ApiKey]] = TypeAdapter(dict[str, ApiKey])


class Settings(BaseSettings):
    # hide_input_in_errors: a refused value may be a secret (an API key, a URL with a
    # password); an error names the setting and the reason, never the value.
    model_config = SettingsConfigDict(
        env_prefix="TASKCORE_", extra="ignore", hide_input_in_errors=True
    )

    rabbitmq_url: str = Field(
        default="amqp://guest:guest@127.0.0.1:5672/",
        validation_alias=AliasChoices("RABBITMQ_URL", "TASKCORE_RABBITMQ_URL"),
    )
    mongo_url: str | None = Field(
        default=None, validation_alias=AliasChoices("MONGO_URL", "TASKCORE_MONGO_URL")
    )
    mongo_db: str = Field(
        default="taskcore", validation_alias=AliasChoices("MONGO_DB", "TASKCORE_MONGO_DB")
    )
    # NoDecode: the validator below parses the JSON, so an empty variable means no keys
    # and malformed JSON is a validation error naming the field.
    api_keys: Annotated[dict[str, ApiKey], NoDecode] = Field(default_factory=dict)
    plugins: Annotated[list[str], NoDecode] = Field(default_factory=list)
    otel_exporter_otlp_endpoint: str | None = Field(
        default=None, validation_alias=AliasChoices("OTEL_EXPORTER_OTLP_ENDPOINT")
    )
    port: int | None = Field(default=None, validation_alias=AliasChoices("PORT", "TASKCORE_PORT"))
    host: str = "127.0.0.1"
    # classic, or quorum for replicated queues (see taskcore.messages.topology and
    # deploy/README.md); the same for every service of a deployment.
    queue_type: Literal["classic", "quorum"] = "classic"
    # false: only check that the topology exists (it was declared by `taskcore topology`),
    # so the services' broker users need no configure rights (deploy/README.md).
    declare_topology: bool = True

    # Executor
    node_id: str | None = None
    concurrency: int = 64
    # Fair share inside a tier: one user holds at most this share of an executor's slots;
    # a user at its share whose tasks have run longer than fair_share_long_seconds hands
    # its waiting messages back for fair_share_defer_seconds (see fair_share.py).
    fair_share: float = Field(default=0.75, gt=0, le=1)
    fair_share_long_seconds: float = Field(default=10.0, gt=0)
    fair_share_defer_seconds: float = Field(default=10.0, gt=0)
    prefetch: int = 128
    lease_seconds: float = 30.0
    shutdown_grace_seconds: float = 20.0
    # An attempt's task.started goes out on its own only once it has run this long; a
    # faster one carries it with its outcome (one message and one fold for both).
    started_delay_ms: float = Field(default=50.0, ge=0, le=10_000)
    # The diag.* task types exist for smoke tests and benchmarks; a deployment leaves them
    # off (one POST of a nested diag.fanout would ask for billions of tasks).
    # `taskcore dev` turns them on.
    enable_diag: bool = False

    # Outbox relay: how old an unfolded outbox entry must be before it is re-sent. Long
    # enough that an aggregator lagging under a burst is not sent its backlog again (a
    # lost publish, which needs the relay, is rare: its writer crashed mid-step).
    relay_after_seconds: float = 15.0
    relay_interval_seconds: float = 1.0

    # API: submission quotas per tier, in tasks per minute and per UTC day (unset means
    # unlimited), e.g. TASKCORE_QUOTA_FREE_PER_MINUTE=60.
    quota_free_per_minute: int | None = Field(default=None, ge=0)
    quota_free_per_day: int | None = Field(default=None, ge=0)
    quota_paid_per_minute: int | None = Field(default=None, ge=0)
    quota_paid_per_day: int | None = Field(default=None, ge=0)
    # API: seconds between keep-alive comments on Server-Sent Events streams.
    sse_ping_seconds: float = Field(default=15.0, gt=0)
    # API: open event streams and ?wait= submissions per user and API process (429 beyond).
    max_streams_per_user: int = Field(default=100, ge=1)
    max_waits_per_user: int = Field(default=100, ge=1)

    # API identity. Keys may also come from a JSON file (same shape as api_keys, keys
    # optionally "sha256:<hex>"), re-read when it changes (polled) and on SIGHUP.
    api_keys_file: str | None = None
    api_keys_poll_seconds: float = Field(default=1.0, gt=0)
    # JWTs: HS256 with the secret, or RS256/ES256 with the PEM public key.
    jwt_secret: str | None = None
    jwt_public_key: str | None = None
    jwt_issuer: str | None = None
    jwt_audience: str | None = None
    jwt_leeway_seconds: float = Field(default=30.0, ge=0)
    # Browsers: CORS origins (comma-separated) and the secret that signs stream tokens
    # (random per process when unset: replicas behind one address must share one).
    cors_origins: Annotated[list[str], NoDecode] = Field(default_factory=list)
    stream_token_secret: str | None = None

    # LLM spend: the currency providers' prices (and budgets' costs) are given in, and the
    # users' budgets, JSON: {"free": {"daily_cost"?, "monthly_cost"?, "daily_tokens"?,
    # "monthly_tokens"?}, "paid": {...}, "users": {"<user id>": {...}}}.
    currency: str = Field(default="USD", min_length=1, max_length=12)
    budgets: Annotated[BudgetsConfig, NoDecode] = Field(default_factory=BudgetsConfig)

    # Batching without timers: a batch is whatever arrived while the previous one was being
    # written or confirmed. These add a wait before each batch, for benchmarks comparing
    # with timer-based batching; 0 (the default) adds none.
    emit_linger_ms: float = Field(default=0.0, ge=0, le=1000)
    fold_flush_ms: float = Field(default=0.0, ge=0, le=1000)

    # Every consumer: a message with a larger body is dead-lettered (reason too_large)
    # before it is parsed.
    max_message_bytes: int = Field(default=4 * 1024 * 1024, ge=1024)

    # Aggregator
    fold_batch_size: int = 500

    # Time. An attempt whose executor died (its lease expired) is taken over as a stall;
    # a task whose attempts stalled this many times is dead-lettered ("stalled").
    max_stalls: int = Field(default=3, ge=1)
    # After an attempt's deadline, how long it has to stop at a checkpoint before it is
    # abandoned (its slot freed; see the README on CPU-bound threads).
    timeout_grace_seconds: float = Field(default=5.0, ge=0, le=3600)
    # The aggregator's sweeps: delayed dispatches and schedules look at least this often
    # (so the latest a delayed task or a schedule's run starts), and for how long a due
    # time still counts as on time rather than missed (also at most half the time to the
    # schedule's next run).
    due_sweep_interval_seconds: float = Field(default=0.5, gt=0, le=60)
    schedule_sweep_interval_seconds: float = Field(default=0.5, gt=0, le=60)
    schedule_misfire_grace_seconds: float = Field(default=60.0, ge=0)
    # API: schedules one user may have.
    max_schedules_per_user: int = Field(default=100, ge=0)
    # Retention of finished work: root tasks (with their trees, event logs and dead
    # letters) are removed this many days after they finished; FAILED, DEAD_LETTER and
    # COMPLETED_WITH_ERRORS after the second. The sweep removes at most retention_batch
    # trees at a time and looks again after retention_interval_seconds when idle.
    retention_days: float = Field(default=30.0, gt=0)
    retention_days_failed: float = Field(default=90.0, gt=0)
    retention_interval_seconds: float = Field(default=300.0, gt=0)
    retention_batch: int = Field(default=100, ge=1, le=10_000)
    # Bounds on trees and results (taskcore.limits).
    max_children: int = Field(default=10_000, ge=1)
    max_descendants: int = Field(default=20_000, ge=1)
    max_depth: int = Field(default=8, ge=1)
    max_result_bytes: int = Field(default=1_048_576, ge=1)

    # Benchmarks: also measure the size of every write command sent to the store.
    store_accounting: bool = False

    log_level: str = "INFO"
    log_format: Literal["auto", "json", "text"] = "auto"

    @field_validator("api_keys", mode="before")
    @classmethod
    def _parse_api_keys(cls, value: Any) -> Any:
        if isinstance(value, str):
            value = json.loads(value) if value.strip() else {}
        try:
            return _API_KEYS.validate_python(value)
        except ValidationError as exc:
            # An entry's key is a secret, and pydantic's location would name it: say
            # which entry by its position instead.
            first = exc.errors()[0]
            keys = list(value) if isinstance(value, dict) else []
            loc = first["loc"]
            entry = keys.index(loc[0]) + 1 if loc and loc[0] in keys else None
            where = ".".join(str(p) for p in loc[1:])
            at = f"entry {entry}" + (f", {where}" if where else "") if entry else "the top level"
            raise ValueError(f"{at}: {first['msg']}") from None
        return value

    @field_validator("budgets", mode="before")
    @classmethod
    def _parse_budgets(cls, value: Any) -> Any:
        return BudgetsConfig.parse(value)

    @field_validator("plugins", "cors_origins", mode="before")
    @classmethod
    def _parse_plugins(cls, value: Any) -> Any:
        if isinstance(value, str):
            return [p.strip() for p in value.split(",") if p.strip()]
        return value

    @property
    def mongo_url_or_default(self) -> str:
        return self.mongo_url or "mongodb://127.0.0.1:27017/"


DEFAULT_PORTS = {"api": 8000, "executor": 8001, "aggregator": 8002, "event-bridge": 8003}


def load_settings(**overrides: Any) -> Settings:
    return Settings(**overrides)
