"""One settings class for the API, the worker and the CLI (env prefix ``NEXTCASE_``)."""

from __future__ import annotations

import os
import sys
from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

# The constant key of earlier releases. Only a database that already holds patients hashed with it keeps
# it (see app.core.secret_key); a new installation gets a random key.
DEV_SECRET = "nextcase-development-only-secret"


def default_data_dir() -> Path:
    """Where the embedded default keeps its database, blobs, broker and key: per user, not per cwd."""
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "nextcase"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="NEXTCASE_", env_file=".env", extra="ignore")

    environment: Literal["development", "production"] = "development"
    # Holds the SQLite database, blobs, embedded broker and generated key unless those are set apart.
    data_dir: Path = Field(default_factory=default_data_dir)
    database_url: str = ""  # empty: sqlite:///<data_dir>/nextcase.db
    blob_dir: Path | None = None  # None: <data_dir>/blobs
    # Keys the patient-id hash: without it a pseudonym cannot be linked back to a hospital id. Empty outside
    # production: a random key generated on first start in <data_dir>/secret.key (owner-only) is used.
    secret_key: SecretStr = SecretStr("")
    max_upload_mb: int = Field(default=1024, gt=0)
    lease_minutes: float = Field(default=60, gt=0)
    # Empty: the embedded default, a worker process started by `nextcase serve` on a SQLite-backed
    # broker (no external service). Production: redis://redis:6379/0.
    broker_url: str = ""
    # Prefixes every Redis key NextCase's broker uses, so several installations (or a test run) can share
    # one Redis database without touching each other's keys.
    broker_key_prefix: str = ""
    # Longest a cycle task may run before Redis hands its unacknowledged message to another worker.
    task_visibility_timeout_s: int = Field(default=12 * 3600, gt=0)
    # A running cycle whose worker has not written its heartbeat for this long is failed (the worker
    # died: the broker would only redeliver after the visibility timeout, wedging the project).
    cycle_heartbeat_timeout_s: float = Field(default=600, gt=0)
    # A running worker touches this file every few seconds; the worker container's health check
    # reads its age (worker/liveness.py). Unset: no file is written.
    worker_liveness_file: Path | None = None
    # A bearer token that may read /metrics and nothing else (give it to Prometheus instead of an admin's token);
    # empty: /metrics needs an admin's token.
    metrics_token: SecretStr = SecretStr("")
    # How often a worker records its heartbeat in the database (nextcase_worker_heartbeat_timestamp_seconds).
    worker_heartbeat_interval_s: float = Field(default=30, gt=0)
    # A running training saves a checkpoint this often; a train phase delivered again after its worker process
    # was killed resumes from the last one, losing at most this much work.
    train_checkpoint_every_s: float = Field(default=120, gt=0)
    # Unlabelled cases per scoring shard: each shard is one task on the gpu queue, so N workers score a cycle
    # together; smaller shards spread better and lose less to a killed worker, at a model load per shard.
    score_shard_cases: int = Field(default=8, ge=1)
    # A sharded score phase whose shards wait in the broker is not stalled, unless no shard has started or finished
    # for this long: then its messages are taken for lost and the cycle is failed like one whose worker went silent.
    score_queue_wait_s: float = Field(default=3600, gt=0)
    # How long an API process trusts a token it has checked (README, "Roles"): a revocation made in
    # another process takes effect within this bound; 0 checks the database on every request.
    token_cache_s: float = Field(default=5, ge=0, le=60)
    # A pooled PostgreSQL connection idle for longer than this is pinged before use (README, "Deployment"); one used
    # more recently is trusted, which spares busy requests a round trip; 0 pings before every use.
    db_ping_idle_s: float = Field(default=1, ge=0, le=300)
    # The control arm of a new project: the probability that a claim is served from a seeded random order
    # instead of the ranking (admins change it per project with PATCH /projects/{id}; 0 turns it off).
    control_fraction: float = Field(default=0.1, ge=0, le=1)
    # A label effort still pending this long after its upload lost its background job (the API process
    # stopped first): reading the campaign report computes up to EFFORT_CATCH_UP of them.
    effort_retry_after_s: float = Field(default=120, ge=0)
    effort_catch_up: int = Field(default=20, ge=0)
    # The built web app (frontend/dist, made by `npm run build`; `make run` builds it when needed), served at "/".
    # None: the frontend/dist folder beside app/ in a source checkout, or /app/frontend/dist in the Docker image.
    web_dir: Path | None = None
    log_level: str = "INFO"
    log_json: bool | None = None  # None: human-readable lines on a terminal, JSON lines otherwise
    host: str = "127.0.0.1"
    port: int = 8000

    @model_validator(mode="after")
    def _resolve_paths_and_key(self) -> Settings:
        self.data_dir = self.data_dir.expanduser().resolve()
        if not self.database_url:
            self.database_url = f"sqlite:///{self.data_dir / 'nextcase.db'}"
        self.blob_dir = (self.blob_dir or self.data_dir / "blobs").expanduser().resolve()
        key = self.secret_key.get_secret_value()
        if self.environment == "production" and key in ("", DEV_SECRET):
            raise ValueError("NEXTCASE_SECRET_KEY must be set when NEXTCASE_ENVIRONMENT=production")
        return self

    @property
    def blobs(self) -> Path:
        assert self.blob_dir is not None  # set by the validator
        return self.blob_dir

    @property
    def web_app_dir(self) -> Path:
        return (self.web_dir or Path(__file__).resolve().parents[2] / "frontend" / "dist").expanduser().resolve()

    @property
    def secret_key_file(self) -> Path:
        return self.data_dir / "secret.key"

    @property
    def json_logs(self) -> bool:
        return self.log_json if self.log_json is not None else not sys.stderr.isatty()

    @property
    def is_sqlite(self) -> bool:
        return self.database_url.startswith("sqlite")

    @property
    def effective_broker_url(self) -> str:
        """Redis (or any Celery broker) when configured; else a SQLite file beside the blobs (embedded)."""
        if self.broker_url:
            return self.broker_url
        return f"sqla+sqlite:///{(self.blobs.parent / 'broker.sqlite').resolve()}"

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
