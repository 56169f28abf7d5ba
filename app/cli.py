"""The ``nextcase`` command line."""

from __future__ import annotations

import atexit
import signal
import subprocess
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from sqlalchemy import func, select

from app.auth import service as auth
from app.core import db, migrate
from app.core.config import get_settings
from app.core.logging import setup_logging
from app.core.storage import get_blob_store
from app.models import User

cli = typer.Typer(help="NextCase: which 3D image should be annotated next.", no_args_is_help=True)
console = Console()


@cli.command("migrate")
def migrate_cmd(revision: Annotated[str, typer.Argument(help="target revision")] = "head") -> None:
    """Bring the database schema to REVISION (default: the latest)."""
    settings = get_settings()
    migrate.upgrade(settings.database_url, revision)
    console.print(f"database at revision {revision}")


@cli.command("create-user")
def create_user(
    name: Annotated[str, typer.Argument(help="login name")],
    role: Annotated[str, typer.Option(help="admin or annotator")] = "annotator",
) -> None:
    """Create a user and print a new API token (shown once)."""
    with db.session_scope() as session:
        user = auth.create_user(session, name, role)
        issued = auth.issue_token(session, user)
    typer.echo(issued.token)


def _bootstrap_admin() -> str | None:
    """On an empty database create user 'admin' so the first start is usable; returns its token."""
    with db.session_scope() as session:
        if session.scalar(select(func.count()).select_from(User)):
            return None
        return auth.issue_token(session, auth.create_user(session, "admin", "admin")).token


def start_embedded_worker() -> subprocess.Popen[bytes]:
    """The embedded default's worker: the same Celery tasks, in a child process, on a SQLite broker."""
    from app.cycles.service import fail_interrupted

    with db.session_scope() as session:
        fail_interrupted(session)
    proc = subprocess.Popen([sys.executable, "-m", "app.cli", "worker", "--pool", "solo"])
    atexit.register(_stop, proc)
    return proc


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()


@cli.command()
def serve(
    host: Annotated[str | None, typer.Option(help="bind address")] = None,
    port: Annotated[int | None, typer.Option(help="TCP port")] = None,
    worker: Annotated[bool, typer.Option(help="start the embedded worker (when no broker is configured)")] = True,
) -> None:
    """Run the API server (migrates the embedded SQLite database first; starts the embedded worker)."""
    import uvicorn

    settings = get_settings()
    setup_logging(settings.log_level, settings.log_json)
    if settings.is_sqlite:
        migrate.upgrade(settings.database_url)
    if worker and settings.embedded_worker:
        start_embedded_worker()
    token = _bootstrap_admin()
    host, port = host or settings.host, port or settings.port
    if token:
        console.print(f"[bold]admin token[/bold] (shown once): {token}")
        console.print(f"try: curl -H 'Authorization: Bearer {token}' http://{host}:{port}/api/v1/projects")
    uvicorn.run("app.main:create_app", factory=True, host=host, port=port, log_config=None)


@cli.command("import-msd")
def import_msd_cmd(
    project: Annotated[str, typer.Argument(help="project name (created from dataset.json if missing)")],
    dataset_dir: Annotated[Path, typer.Argument(exists=True, file_okay=False, help="MSD folder with dataset.json")],
    with_labels: Annotated[bool, typer.Option("--with-labels", help="store labelsTr masks as version 1")] = False,
) -> None:
    """Import a Medical Segmentation Decathlon folder (imagesTr, labelsTr)."""
    from app.bulk_import import import_msd, read_msd

    total = len(read_msd(dataset_dir).pairs)
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, console=console) as progress:
        task = progress.add_task(f"importing into {project}", total=total)
        report = import_msd(project, dataset_dir, get_blob_store(), with_labels=with_labels,
                            on_case=lambda _: progress.advance(task))
    console.print(f"imported {report.imported}, already present {report.skipped}, failed {len(report.failed)}")
    for line in report.failed:
        console.print(f"  [red]failed[/red] {line}")
    if report.failed:
        raise typer.Exit(1)


@cli.command("worker")
def worker_cmd(
    pool: Annotated[str, typer.Option(help="prefork (production) or solo (embedded)")] = "prefork",
    concurrency: Annotated[int, typer.Option(help="parallel tasks; keep 1 per GPU")] = 1,
    queues: Annotated[str, typer.Option(help="queues to consume")] = "gpu",
    loglevel: Annotated[str, typer.Option(help="Celery log level")] = "INFO",
) -> None:
    """Run a Celery worker for retraining cycles (train, evaluate, score, publish)."""
    from worker.celery_app import celery_app

    setup_logging(get_settings().log_level, get_settings().log_json)
    celery_app.worker_main([
        "worker", f"--pool={pool}", f"--concurrency={concurrency}", f"--queues={queues}", f"--loglevel={loglevel}",
        "--without-gossip", "--without-mingle", "--prefetch-multiplier=1",
    ])


def main() -> None:
    cli()
if __name__ == "__main__":
    main()
