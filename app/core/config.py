"""One settings class for the API, the worker and the CLI (env prefix ``NEXTCASE_``)."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

DEV_SECRET = "nextcase-development-only-secret"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="NEXTCASE_", env_file=".env", extra="ignore")

    environment: Literal["development", "production"] = "development"
    database_url: str = "sqlite:///./var/nextcase.db"
    blob_dir: Path = Path("./var/blobs")
    # Keys the patient-id hash: without it a pseudonym cannot be linked back to a hospital id.
    secret_key: SecretStr = SecretStr(DEV_SECRET)
    max_upload_mb: int = Field(default=1024, gt=0)
    lease_minutes: float = Field(default=60, gt=0)
    # Empty: the embedded default, a worker process started by `nextcase serve` on a SQLite-backed
    # broker (no external service). Production: redis://redis:6379/0.
    broker_url: str = ""
    # Longest a cycle task may run before Redis hands its unacknowledged message to another worker.
    task_visibility_timeout_s: int = Field(default=12 * 3600, gt=0)
    # A running cycle whose worker has not written its heartbeat for this long is failed (the worker
    # died: the broker would only redeliver after the visibility timeout, wedging the project).
    cycle_heartbeat_timeout_s: float = Field(default=600, gt=0)
    # A running worker touches this file every few seconds; the worker container's health check
    # reads its age (worker/liveness.py). Unset: no file is written.
    worker_liveness_file: Path | None = None
    log_level: str = "INFO"
    log_json: bool = True
    host: str = "127.0.0.1"
    port: int = 8000

    @model_validator(mode="after")
    def _no_default_secret_in_production(self) -> Settings:
        if self.environment == "production" and self.secret_key.get_secret_value() == DEV_SECRET:
            raise ValueError("NEXTCASE_SECRET_KEY must be set when NEXTCASE_ENVIRONMENT=production")
        return self

    @property
    def is_sqlite(self) -> bool:
        return self.database_url.startswith("sqlite")

    @property
    def effective_broker_url(self) -> str:
        """Redis (or any Celery broker) when configured; else a SQLite file beside the blobs (embedded)."""
        if self.broker_url:
            return self.broker_url
        return f"sqla+sqlite:///{(self.blob_dir.parent / 'broker.sqlite').resolve()}"

    @property
    def embedded_worker(self) -> bool:
        return not self.broker_url

    @property
    def cycle_heartbeat_interval_s(self) -> float:
        """How often a running phase writes its heartbeat: several beats per bound, at most every 30 s."""
        return min(30.0, self.cycle_heartbeat_timeout_s / 5)

    @property
    def max_upload_bytes(self) -> int:
        return self.max_upload_mb * 1024 * 1024


@lru_cache
def get_settings() -> Settings:
    return Settings()
