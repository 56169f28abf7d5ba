"""The ``nextcase`` command line."""

from __future__ import annotations

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


@cli.command()
def serve(
    host: Annotated[str | None, typer.Option(help="bind address")] = None,
    port: Annotated[int | None, typer.Option(help="TCP port")] = None,
) -> None:
    """Run the API server (migrates the embedded SQLite database first)."""
    import uvicorn

    settings = get_settings()
    setup_logging(settings.log_level, settings.log_json)
    if settings.is_sqlite:
        migrate.upgrade(settings.database_url)
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


def main() -> None:
    cli()
if __name__ == "__main__":
    main()
