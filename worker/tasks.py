"""Celery tasks: a cycle id (and a shard index) and one step through ``worker.pipeline``; or a DICOMweb job id
(light ``interop`` queue).

The score phase spreads over workers: the ``score`` task splits the unlabelled cases into shards and sends one
``score_shard`` task per shard; the shard task that finishes the last shard (the ``score_shards`` table says which)
sends ``publish``. No chord: a shard whose worker host was lost is sent again as a new task
(``app.cycles.service.take_over_lost_work``), which a chord would not count, and the job state stays in the
database rather than in Celery results.
"""

from __future__ import annotations

from celery import chain

from worker import celery_app as apps
from worker import pipeline
from worker.celery_app import GPU_QUEUE, PRIORITY_STEPS, celery_app


@celery_app.task(name="nextcase.cycle.train")
def train(cycle_id: int) -> None:
    pipeline.run_phase(cycle_id, "train")


@celery_app.task(name="nextcase.cycle.evaluate")
def evaluate(cycle_id: int) -> None:
    pipeline.run_phase(cycle_id, "evaluate")


@celery_app.task(name="nextcase.cycle.score")
def score(cycle_id: int) -> None:
    shards = pipeline.start_scoring(cycle_id)
    for position, index in enumerate(shards):
        send_shard(cycle_id, index, shard_priority(position, len(shards)))
    if not shards and pipeline.scoring_complete(cycle_id):  # no case to score, or delivered again after the last
        send_publish(cycle_id)


def send_shard(cycle_id: int, index: int, priority: int = 0) -> None:
    """Queue one scoring shard on the gpu queue."""
    apps.celery_app.send_task("nextcase.cycle.score_shard", args=(cycle_id, index), queue=GPU_QUEUE, priority=priority)


def send_publish(cycle_id: int) -> None:
    apps.celery_app.send_task("nextcase.cycle.publish", args=(cycle_id,), queue=GPU_QUEUE)


def shard_priority(position: int, count: int) -> int:
    """The broker priority of a cycle's shard at ``position`` of ``count``: how far into its cycle it lies, 0-9.

    On Redis a lower number is served first, so when two projects' cycles score at once the workers take the shard
    that is least far into its own cycle: the cycles advance side by side instead of the later one waiting for every
    shard of the earlier one. (The embedded broker has one worker and ignores priorities.)
    """
    return min(PRIORITY_STEPS - 1, position * PRIORITY_STEPS // max(count, 1))


@celery_app.task(name="nextcase.cycle.score_shard")
def score_shard(cycle_id: int, index: int) -> None:
    if pipeline.run_shard(cycle_id, index):
        send_publish(cycle_id)


@celery_app.task(name="nextcase.cycle.publish")
def publish(cycle_id: int) -> None:
    pipeline.run_phase(cycle_id, "publish")


def cycle_chain(cycle_id: int, start: str = "train") -> chain:
    """train → evaluate → score, from ``start`` on; immutable signatures: each step gets only the id. Score sends the
    shards and the last shard sends publish, so publish is in the chain only when it is where the chain starts (a
    publish taken over from a lost worker)."""
    app = apps.celery_app  # looked up now: tests and the CLI may have rebuilt it for new settings
    phases = pipeline.PHASES[pipeline.PHASES.index(start):]
    steps = [app.signature(f"nextcase.cycle.{phase}", args=(cycle_id,), immutable=True, queue=GPU_QUEUE)
             for phase in phases if phase != "publish" or phase == start]
    return chain(*steps)


@celery_app.task(name="nextcase.dicomweb.import")
def dicomweb_import(import_id: int) -> None:
    from app.dicomweb.service import run_import

    run_import(import_id)


@celery_app.task(name="nextcase.dicomweb.export")
def dicomweb_export(export_id: int) -> None:
    from app.dicomweb.service import run_export

    run_export(export_id)
