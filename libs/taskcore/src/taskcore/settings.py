"""Typed settings, read once from the environment (see the README's configuration table)."""

from __future__ import annotations

import json
from typing import Annotated, Any, Literal

from pydantic import AliasChoices, BaseModel, Field, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

Role = Literal["user", "admin"]
Tier = Literal["free", "paid"]


class ApiKey(BaseModel):
    user_id: str
    role: Role = "user"
    tier: Tier = "paid"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="TASKCORE_", extra="ignore")

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
    prefetch: int = 128
    lease_seconds: float = 30.0
    shutdown_grace_seconds: float = 20.0
    disable_diag: bool = False

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

    # Every consumer: a message with a larger body is dead-lettered (reason too_large)
    # before it is parsed.
    max_message_bytes: int = Field(default=4 * 1024 * 1024, ge=1024)

    # Aggregator
    fold_batch_size: int = 500
    fold_flush_ms: float = 5.0

    log_level: str = "INFO"
    log_format: Literal["auto", "json", "text"] = "auto"

    @field_validator("api_keys", mode="before")
    @classmethod
    def _parse_api_keys(cls, value: Any) -> Any:
        if isinstance(value, str):
            return json.loads(value) if value.strip() else {}
        return value

    @field_validator("plugins", mode="before")
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
