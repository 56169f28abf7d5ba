"""A file whose age says whether the worker is alive: the cheap health check of the worker container.

``celery inspect ping`` would start a Python process, import the app and round-trip the broker
every interval. Instead the worker touches ``NEXTCASE_WORKER_LIVENESS_FILE`` every
``TOUCH_INTERVAL_S`` seconds, and the container's health check only compares the file's age with a
bound (``find FILE -mmin -1`` in docker-compose.yml): no Python start, no broker traffic.

What a fresh file means: the step is a consumer step, so Celery starts it only once the worker
consumes from the broker and stops it (the file is removed) when the broker connection is lost or
the worker shuts down; the timer runs in the worker's main process, so a long task in a pool child
does not stall it, while a wedged or killed main process stops the touches.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from celery import bootsteps

from app.core.config import get_settings

log = logging.getLogger("nextcase.worker")

TOUCH_INTERVAL_S = 10.0  # the health check's bound (one minute) covers several missed touches


class LivenessFile(bootsteps.StartStopStep):
    requires = ("celery.worker.consumer.tasks:Tasks",)  # started once the worker consumes its queues

    def __init__(self, parent: Any, **kwargs: Any) -> None:
        super().__init__(parent, **kwargs)
        self.path: Path | None = get_settings().worker_liveness_file
        self.timer_entry: Any = None

    def start(self, parent: Any) -> None:
        if self.path is None:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._touch()
        self.timer_entry = parent.timer.call_repeatedly(TOUCH_INTERVAL_S, self._touch)

    def stop(self, parent: Any) -> None:
        if self.timer_entry is not None:
            self.timer_entry.cancel()
            self.timer_entry = None
        if self.path is not None:
            self.path.unlink(missing_ok=True)  # unhealthy at once, not only after the bound

    shutdown = stop

    def _touch(self) -> None:
        if self.path is not None:
            self.path.touch()


class DatabaseHeartbeat(bootsteps.StartStopStep):
    """Records the worker's name and time in ``worker_heartbeats`` every NEXTCASE_WORKER_HEARTBEAT_INTERVAL_S,
    for /metrics (nextcase_worker_heartbeat_timestamp_seconds): operators see a worker that stopped reporting.
    On the same tick it sends again the work of a worker host that went silent mid-task
    (``app.cycles.service.take_over_lost_work``).

    Like :class:`LivenessFile`, a consumer step ticking in the worker's main process.
    """

    requires = ("celery.worker.consumer.tasks:Tasks",)

    def __init__(self, parent: Any, **kwargs: Any) -> None:
        super().__init__(parent, **kwargs)
        self.name = str(getattr(parent, "hostname", "worker"))
        self.timer_entry: Any = None

    def start(self, parent: Any) -> None:
        self._beat()
        self.timer_entry = parent.timer.call_repeatedly(get_settings().worker_heartbeat_interval_s, self._beat)

    def stop(self, parent: Any) -> None:
        if self.timer_entry is not None:
            self.timer_entry.cancel()
            self.timer_entry = None

    shutdown = stop

    def _beat(self) -> None:
        from app.core import db
        from app.cycles.service import record_worker_heartbeat, take_over_lost_work

        try:
            with db.session_scope() as session:
                record_worker_heartbeat(session, self.name)
            with db.session_scope() as session:  # the living rescue the shards of a worker host that was lost
                take_over_lost_work(session)
        except Exception:  # the database may be down for a moment: the next beat retries
            log.warning("worker heartbeat not recorded", exc_info=True)
