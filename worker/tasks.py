"""Celery tasks: a cycle id (and a shard index) and one step through ``worker.pipeline``; or a DICOMweb job id
(light ``interop`` queue).

The score phase spreads over workers: the ``score`` task splits the unlabelled cases into shards and replaces
itself with a group of ``score_shard`` tasks; Celery turns a group that replaces a task inside a chain into a
chord whose body is the rest of the chain, so ``publish`` runs once every shard has returned.
"""

from __future__ import annotations

from typing import Any

from celery import chain, group

from worker import celery_app as apps
from worker import pipeline
from worker.celery_app import GPU_QUEUE, PRIORITY_STEPS, celery_app


@celery_app.task(name="nextcase.cycle.train")
def train(cycle_id: int) -> None:
    pipeline.run_phase(cycle_id, "train")


@celery_app.task(name="nextcase.cycle.evaluate")
def evaluate(cycle_id: int) -> None:
    pipeline.run_phase(cycle_id, "evaluate")


@celery_app.task(name="nextcase.cycle.score", bind=True)
def score(self: Any, cycle_id: int) -> None:
    shards = pipeline.start_scoring(cycle_id)
    if shards:
        app = apps.celery_app
        raise self.replace(group(app.signature("nextcase.cycle.score_shard", args=(cycle_id, index), immutable=True,
                                               queue=GPU_QUEUE, priority=shard_priority(position, len(shards)))
                                 for position, index in enumerate(shards)))


def shard_priority(position: int, count: int) -> int:
    """The broker priority of a cycle's shard at ``position`` of ``count``: how far into its cycle it lies, 0-9.

    On Redis a lower number is served first, so when two projects' cycles score at once the workers take the shard
    that is least far into its own cycle: the cycles advance side by side instead of the later one waiting for every
    shard of the earlier one. (The embedded broker has one worker and ignores priorities.)
    """
    return min(PRIORITY_STEPS - 1, position * PRIORITY_STEPS // max(count, 1))


# The shards' (empty) results are what the chord counts: they must be stored, unlike every other task's.
@celery_app.task(name="nextcase.cycle.score_shard", ignore_result=False)
def score_shard(cycle_id: int, index: int) -> None:
    pipeline.run_shard(cycle_id, index)


@celery_app.task(name="nextcase.cycle.publish")
def publish(cycle_id: int) -> None:
    pipeline.run_phase(cycle_id, "publish")


def cycle_chain(cycle_id: int) -> chain:
    """train → evaluate → score (→ shards) → publish; immutable signatures: each step gets only the id."""
    app = apps.celery_app  # looked up now: tests and the CLI may have rebuilt it for new settings
    steps = [app.signature(f"nextcase.cycle.{phase}", args=(cycle_id,), immutable=True, queue=GPU_QUEUE)
             for phase in pipeline.PHASES]
    return chain(*steps)


@celery_app.task(name="nextcase.dicomweb.import")
def dicomweb_import(import_id: int) -> None:
    from app.dicomweb.service import run_import

    run_import(import_id)


@celery_app.task(name="nextcase.dicomweb.export")
def dicomweb_export(export_id: int) -> None:
    from app.dicomweb.service import run_export

    run_export(export_id)
