"""Settings every service reads from the environment (prefix ``ACCORD_``), at start-up only."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class ServiceSettings(BaseSettings):
    """What a service needs to run. Each service subclasses it only to change defaults."""

    model_config = SettingsConfigDict(env_prefix="ACCORD_", extra="ignore")

    service_name: str = Field(default="agreements", pattern=r"^[a-z]+$",
                              description="Service name: routing-key prefix, CloudEvents source, schema.")
    database_url: str = "postgresql://postgres@127.0.0.1:5432/accord"
    database_schema: str | None = Field(default=None, pattern=r"^[a-z_][a-z0-9_]*$",
                                        description="Postgres schema; defaults to the service name.")
    database_pool_size: int = Field(default=10, ge=2, le=100)
    amqp_url: str = "amqp://guest:guest@127.0.0.1:5672/"
    exchange: str = Field(default="accord.events", description="Durable topic exchange all events go to.")
    queue_prefix: str = Field(default="accord", description="Prefix of this deployment's queue names.")
    prefetch: int = Field(default=64, ge=1, le=10_000, description="Unacknowledged messages per consumer.")
    http_host: str = "127.0.0.1"
    http_port: int = Field(default=8000, ge=0, le=65535)
    log_level: str = Field(default="INFO", pattern=r"^(DEBUG|INFO|WARNING|ERROR)$")
    log_json: bool = True
    outbox_batch_size: int = Field(default=500, ge=1, le=10_000)

    @property
    def db_schema(self) -> str:
        return self.database_schema or self.service_name

    @property
    def source(self) -> str:
        """The CloudEvents `source` of this service's events."""
        return f"/accord/{self.service_name}"
