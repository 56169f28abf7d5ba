"""Celery tasks: a cycle id and one phase through ``worker.pipeline``; or a DICOMweb job id (light queue)."""

from __future__ import annotations

from celery import chain

from worker import celery_app as apps
from worker import pipeline
from worker.celery_app import GPU_QUEUE, celery_app


@celery_app.task(name="nextcase.cycle.train")
def train(cycle_id: int) -> None:
    pipeline.run_phase(cycle_id, "train")


@celery_app.task(name="nextcase.cycle.evaluate")
def evaluate(cycle_id: int) -> None:
    pipeline.run_phase(cycle_id, "evaluate")


@celery_app.task(name="nextcase.cycle.score")
def score(cycle_id: int) -> None:
    pipeline.run_phase(cycle_id, "score")


@celery_app.task(name="nextcase.cycle.publish")
def publish(cycle_id: int) -> None:
    pipeline.run_phase(cycle_id, "publish")


def cycle_chain(cycle_id: int) -> chain:
    """train → evaluate → score → publish; immutable signatures: each phase gets only the id."""
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
