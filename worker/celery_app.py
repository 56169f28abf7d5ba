"""The Celery application.

Delivery choices (see README, "Worker"):
- ``task_acks_late`` + ``task_reject_on_worker_lost``: a message is acknowledged only when its task
  returns, so a crashed worker's task is redelivered instead of vanishing; every phase is safe to run
  again (training resumes from its checkpoint, scoring skips scored cases, publish is one transaction).
- Redis ``visibility_timeout`` (``NEXTCASE_TASK_VISIBILITY_TIMEOUT_S``, 12 h) exceeds the longest
  cycle phase, so a long training run is not handed to a second worker while the first still runs.
- One ``gpu`` queue, ``worker_prefetch_multiplier=1`` and concurrency 1: one training at a time per
  GPU, and no task waits in a busy worker's buffer while another worker is idle.
- Job state lives in the ``cycles`` and ``score_shards`` tables; no task stores a result, so there is no result
  backend: the shard task that finishes a cycle's last shard sends ``publish`` (see ``worker.tasks``).
- The score phase is a group of shards (``NEXTCASE_SCORE_SHARD_CASES`` cases each), so N workers on the
  ``gpu`` queue score one cycle together. A shard whose worker process is killed is requeued at once by
  the worker's main process (``task_reject_on_worker_lost``) and scores only the cases left; a train
  phase requeued that way resumes from its last checkpoint. A shard whose whole worker host was lost (its
  main process too) stays unacknowledged until the visibility timeout; its heartbeat stops, and after
  ``NEXTCASE_CYCLE_HEARTBEAT_TIMEOUT_S`` it is sent again (``app.cycles.service.take_over_lost_work``).
- A light ``interop`` queue for PACS imports and SEG exports (network and DICOM decoding, no GPU): a
  production worker of its own consumes it (docker-compose ``worker-interop``), so an import never waits
  behind a training run; the embedded worker consumes both queues. Job state lives in
  ``dicomweb_imports`` / ``dicom_seg_exports``.
"""

from __future__ import annotations

from typing import Any

from celery import Celery
from celery.signals import worker_process_init

from app.core import db
from app.core.config import get_settings
from worker.liveness import DatabaseHeartbeat, LivenessFile

GPU_QUEUE = "gpu"
INTEROP_QUEUE = "interop"


PRIORITY_STEPS = 10


def _transport_options(url: str, visibility_timeout_s: int, key_prefix: str) -> dict[str, Any]:
    # The SQLite-backed embedded transport hands its options to create_engine: give it none.
    if url.startswith("sqla+"):
        return {}
    # Ten priority levels (one Redis list each, "gpu", "gpu:1", ... "gpu:9"): the scoring shards of concurrent cycles
    # interleave through them (worker.tasks.shard_priority). Messages without a priority go to level 0.
    options: dict[str, Any] = {"visibility_timeout": visibility_timeout_s,
                               "priority_steps": list(range(PRIORITY_STEPS)), "sep": ":"}
    if key_prefix:
        options["global_keyprefix"] = key_prefix  # every queue and bookkeeping key (kombu >= 5.3)
    return options


def create_celery() -> Celery:
    settings = get_settings()
    app = Celery("nextcase", broker=settings.effective_broker_url, include=["worker.tasks"])
    app.conf.update(
        task_ignore_result=True,
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        task_default_queue=GPU_QUEUE,
        broker_transport_options=_transport_options(settings.effective_broker_url, settings.task_visibility_timeout_s,
                                                    settings.broker_key_prefix),
        broker_connection_retry_on_startup=True,
        task_serializer="json",
        accept_content=["json"],
        worker_hijack_root_logger=False,
        worker_send_task_events=False,
    )
    app.steps["consumer"].add(LivenessFile)
    app.steps["consumer"].add(DatabaseHeartbeat)
    return app


celery_app = create_celery()


def reset_celery() -> Celery:
    """Rebuild the app after settings changed (tests, the CLI)."""
    global celery_app
    celery_app = create_celery()
    return celery_app


@worker_process_init.connect
def _fresh_connections(**_: Any) -> None:
    # Pooled database connections must not cross a fork.
    db.dispose()
