"""The ``nextcase`` command line.

Heavy modules (SQLAlchemy, FastAPI, torch) are imported inside the commands, so ``--help`` and
``--version`` answer at once. User errors print one line and exit 1; tracebacks are for bugs.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import signal
import subprocess
import sys
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

if TYPE_CHECKING:
    from app.demo import Demo

cli = typer.Typer(help="NextCase: which 3D image should be annotated next.", no_args_is_help=True,
                  pretty_exceptions_enable=False)


class Role(StrEnum):
    admin = "admin"
    annotator = "annotator"
    reviewer = "reviewer"


class Pool(StrEnum):
    prefork = "prefork"
    solo = "solo"
    threads = "threads"


class Engine(StrEnum):
    service = "service"
    direct = "direct"


class ExportFormat(StrEnum):
    msd = "msd"
    nnunet = "nnunet"


class Device(StrEnum):
    cpu = "cpu"
    cuda = "cuda"


class UserError(Exception):
    """A mistake of the caller (bad input, missing database): one line on stderr, exit status 1."""


def _version(value: bool) -> None:
    if value:
        from importlib.metadata import version

        typer.echo(f"nextcase {version('nextcase')}")
        raise typer.Exit()


@cli.callback()
def _root(
    version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True,
                                          help="print the version and exit")] = False,
) -> None:
    """NextCase: which 3D image should be annotated next."""


def prepare_database() -> str:
    """Bring the embedded SQLite database to the latest schema; refuse a server database that is behind.

    Every command that touches the database calls this, so nothing runs on a missing or old schema.
    A PostgreSQL schema is migrated only by ``nextcase migrate`` (the compose file's one-shot job):
    several API and worker processes must not race to migrate it. Returns the patient-id key's start-up line.
    """
    from app.core import migrate
    from app.core.config import get_settings

    settings = get_settings()
    if settings.is_sqlite:
        migrate.upgrade(settings.database_url)
    elif not migrate.is_current(settings.database_url):
        raise UserError("the database schema is not the latest: run `nextcase migrate` first")
    return _check_key()


def _check_key() -> str:
    """Load or create the patient-id key before anything hashes a patient id; returns the start-up line."""
    from sqlalchemy import func, select

    from app.core import db
    from app.core.secret_key import MissingKeyFile, describe, ensure_key
    from app.models import Patient

    with db.session_scope() as session:
        has_patients = bool(session.scalar(select(func.count()).select_from(Patient)))
    try:
        return describe(ensure_key(has_patients=has_patients))
    except MissingKeyFile as exc:
        raise UserError(str(exc)) from None


@cli.command("migrate")
def migrate_cmd(revision: Annotated[str, typer.Argument(help="target revision")] = "head") -> None:
    """Bring the database schema to REVISION (default: the latest)."""
    from app.core import migrate
    from app.core.config import get_settings

    migrate.upgrade(get_settings().database_url, revision)
    typer.echo(f"database at revision {revision}")


@cli.command("create-user")
def create_user(
    name: Annotated[str, typer.Argument(help="login name")],
    role: Annotated[Role, typer.Option(help="what the user may do")] = Role.annotator,
) -> None:
    """Create a user and print a new API token (shown once)."""
    from app.auth import service as auth
    from app.core import db

    prepare_database()
    with db.session_scope() as session:
        user = auth.create_user(session, name, role.value)
        issued = auth.issue_token(session, user)
    typer.echo(issued.token)


@cli.command("create-token")
def create_token(name: Annotated[str, typer.Argument(help="an existing user's login name")]) -> None:
    """Print a new API token for an existing user (shown once): how to recover a lost admin token."""
    from app.auth import service as auth
    from app.core import db

    prepare_database()
    with db.session_scope() as session:
        issued = auth.issue_token(session, auth.get_user_by_name(session, name))
    typer.echo(issued.token)


def _bootstrap_admin() -> str | None:
    """Without an enabled admin, create one so the first start is usable; returns its token."""
    from app.auth import service as auth
    from app.core import db

    with db.session_scope() as session:
        if auth.has_usable_admin(session):
            return None
        name = next(n for n in ("admin", *(f"admin-{i}" for i in range(2, 100)))
                    if not auth.user_exists(session, n))
        return auth.issue_token(session, auth.create_user(session, name, "admin")).token


# The embedded worker runs cycles (gpu) and PACS imports / SEG exports (interop), one task at a time.
EMBEDDED_QUEUES = "gpu,interop"


def start_embedded_worker() -> subprocess.Popen[bytes]:
    """The embedded default's worker: the same Celery tasks, in a child process, on a SQLite broker."""
    from app.core import db
    from app.cycles.service import fail_interrupted

    with db.session_scope() as session:
        fail_interrupted(session)
    _declare_task_queue()
    return subprocess.Popen([sys.executable, "-m", "app.cli", "worker", "--pool", "solo", "--quiet",
                             "--queues", EMBEDDED_QUEUES],
                            preexec_fn=_die_with_parent if sys.platform.startswith("linux") else None)


def _declare_task_queue() -> None:
    """Create the embedded broker's tables and queue row before two processes race to: kombu's SQLAlchemy
    transport guards its get-or-create with an in-process lock only, so the API's first publish and the
    starting worker both inserted the row and one failed (IntegrityError, a 503 on the first cycle)."""
    from worker.celery_app import celery_app

    with celery_app.connection_for_write() as conn:
        for queue in EMBEDDED_QUEUES.split(","):
            celery_app.amqp.queues[queue].bind(conn.default_channel).declare()


def _die_with_parent() -> None:
    """Linux: the kernel sends the worker SIGTERM when the server process dies, however it dies."""
    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


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
    demo: Annotated[bool, typer.Option(help="seed a demo project when the database has none")] = True,
    dataset: Annotated[Path | None, typer.Option(exists=True, file_okay=False,
                                                 help="seed the demo from this MSD folder, not phantoms")] = None,
) -> None:
    """Run the API server (migrates the embedded SQLite database first; starts the embedded worker)."""
    import uvicorn

    from app.core.config import get_settings
    from app.core.logging import setup_logging
    from app.terminal import Announcer

    settings = get_settings()
    setup_logging(settings.log_level, settings.json_logs)
    typer.echo(prepare_database())  # says where the patient-id key is, and whether it was just generated
    typer.echo(f"data folder: {settings.data_dir}" if settings.is_sqlite else "database: PostgreSQL")
    development = settings.environment == "development"
    token = _bootstrap_admin() if development else None  # production: `nextcase create-user`, no token in logs
    host, port = host or settings.host, port or settings.port
    seeded = _seed_demo(dataset) if demo and development and _needs_demo() else None
    child = start_embedded_worker() if worker and settings.embedded_worker else None
    announcer = Announcer(f"http://{host}:{port}", token, seeded)
    announcer.start()
    # uvicorn re-raises SIGTERM after its graceful shutdown; turning it into SystemExit lets `finally` stop the worker.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    try:
        # access_log off: its lines carry raw paths (lease tokens); the app logs route templates instead.
        uvicorn.run("app.main:create_app", factory=True, host=host, port=port, log_config=None, access_log=False)
    finally:
        announcer.stop()
        announcer.tell_once()  # the one-time tokens, even when the server stopped before they were printed
        if child is not None:
            _stop(child)


def _needs_demo() -> bool:
    from app.demo import needs_seeding

    return needs_seeding()


def _seed_demo(dataset: Path | None) -> Demo:
    from app.core.config import get_settings
    from app.core.storage import get_blob_store
    from app.cycles.service import enqueue
    from app.demo import seed

    typer.echo("seeding the demo project (phantom CTs)..." if dataset is None else f"seeding from {dataset}...")
    demo = seed(get_blob_store(), get_settings().data_dir / "demo", dataset)
    enqueue(demo.cycle_id)
    return demo


@cli.command("import-msd")
def import_msd_cmd(
    project: Annotated[str, typer.Argument(help="project name (created from dataset.json if missing)")],
    dataset_dir: Annotated[Path, typer.Argument(exists=True, file_okay=False, help="MSD folder with dataset.json")],
    with_labels: Annotated[bool, typer.Option("--with-labels", help="store labelsTr masks as version 1")] = False,
) -> None:
    """Import a Medical Segmentation Decathlon folder (imagesTr, labelsTr)."""
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from app.bulk_import import import_msd, read_msd
    from app.core.storage import get_blob_store

    prepare_database()
    console = Console()

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


@cli.command("export")
def export_cmd(
    project: Annotated[str, typer.Argument(help="project name")],
    out_dir: Annotated[Path, typer.Argument(file_okay=False, help="folder to write (created; should be empty)")],
    format: Annotated[ExportFormat, typer.Option("--format", help="msd: Medical Segmentation Decathlon; nnunet: "
                                                 "nnU-Net v2 raw (name the folder DatasetXXX_Name)")],
    split: Annotated[str, typer.Option("--split", help="comma-separated splits to include")] = "pool,validation,test",
) -> None:
    """Write the latest label version of every labelled case, with its image, as a training set."""
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from app.core import db
    from app.core.storage import get_blob_store
    from app.projects.service import find_project
    from app.training_sets.service import parse_splits, plan, write_folder

    prepare_database()
    if out_dir.exists() and any(out_dir.iterdir()):
        raise UserError(f"{out_dir} is not empty; export into a new folder")
    with db.session_scope() as session:
        found = find_project(session, project)
        if found is None:
            raise UserError(f"no project named {project!r}")
        training_set = plan(session, found.id, format.value, parse_splits(split))
    console = Console()
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, console=console) as progress:
        task = progress.add_task(f"exporting {project}", total=len(training_set.cases))
        write_folder(training_set, get_blob_store(), out_dir, on_case=lambda _: progress.advance(task))
    console.print(f"wrote {len(training_set.cases)} labelled cases to {out_dir} ({format.value})")


@cli.command()
def simulate(
    dataset_dir: Annotated[Path, typer.Argument(exists=True, file_okay=False, help="labelled MSD folder")],
    out: Annotated[Path, typer.Option(help="results folder (CSV, plot, summary); rerun resumes")] = Path("sim"),
    initial: Annotated[int, typer.Option(help="initially labelled pool cases (paper: 11)")] = 11,
    per_cycle: Annotated[int, typer.Option(help="cases the oracle labels after each cycle (paper: 5)")] = 5,
    cycles: Annotated[int, typer.Option(help="acquisition rounds after the initial training (paper: 4)")] = 4,
    val: Annotated[int, typer.Option(help="validation cases (paper: 6)")] = 6,
    test: Annotated[int, typer.Option(help="test cases, evaluated after every cycle (paper: 22)")] = 22,
    strategies: Annotated[str, typer.Option(help="comma-separated strategies")] = "mc_dropout_variance,random",
    seeds: Annotated[int, typer.Option(help="split seeds 0..N-1: repetitions with different splits")] = 3,
    train_seeds: Annotated[int, typer.Option(help="training seeds 0..N-1 per split seed (replicates)")] = 1,
    steps: Annotated[int | None, typer.Option(help="optimiser steps per training")] = None,
    epochs: Annotated[int | None, typer.Option(help="legacy: training epochs per cycle (overrides --steps)")] = None,
    mc_passes: Annotated[int | None, typer.Option(help="T, MC-dropout passes (paper: 5)")] = None,
    dropout: Annotated[float | None, typer.Option(help="p (paper: 0.5)")] = None,
    params: Annotated[str, typer.Option(help='more cycle parameters as JSON: {"patch_size": [32, 64, 64]}')] = "{}",
    resample: Annotated[float, typer.Option(help="make the voxel grid this many times coarser (fits a CPU)")] = 1.0,
    full_pool: Annotated[bool, typer.Option(help="also train once on the whole pool (the ceiling)")] = True,
    control_fraction: Annotated[float, typer.Option(
        min=0.0, max=1.0, help="--engine service: fraction of the oracle's claims drawn at random (the control arm "
                               "behind live.csv and live_estimate.png). Default 0: random picks would dilute the "
                               "strategy being compared; set it (e.g. 0.5) for the live estimate")] = 0.0,
    url: Annotated[str | None, typer.Option(help="a running NextCase server (default: start an embedded one)")] = None,
    token: Annotated[str | None, typer.Option(help="admin token for --url")] = None,
    engine: Annotated[Engine, typer.Option(help="service: through the REST API; direct: the same ML functions in "
                                                "parallel processes, no service (python -m worker.experiment)")]
    = Engine.service,
    workers: Annotated[int, typer.Option(help="--engine direct: campaigns at a time")] = 1,
    device: Annotated[Device, typer.Option(help="--engine direct: where to train")] = Device.cpu,
    warm_steps: Annotated[int | None, typer.Option(help="--engine direct: steps when warm-starting")] = None,
) -> None:
    """Replay annotation campaigns with an oracle annotator and report active selection against random.

    The paper's protocol: --initial 11 --per-cycle 5 --cycles 4 --val 6 --test 22
    --strategies mc_dropout_variance,random --seeds 3 --mc-passes 5 --dropout 0.5
    """
    import json

    from rich.console import Console

    console = Console()
    extra = {"steps": steps, "epochs": epochs, "mc_passes": mc_passes, "dropout": dropout}
    cycle_params = {**json.loads(params), **{k: v for k, v in extra.items() if v is not None}}
    arms = _strategies(strategies)
    if engine is Engine.direct:
        if resample != 1.0 or url:
            raise typer.BadParameter("--resample and --url belong to --engine service", param_hint="--engine")
        from app.report import write_report
        from worker.experiment import Protocol as DirectProtocol
        from worker.experiment import run_experiment

        direct = DirectProtocol(initial=initial, per_cycle=per_cycle, cycles=cycles, test=test, val=val, arms=arms,
                                split_seeds=list(range(seeds)), train_seeds=list(range(train_seeds)),
                                params=cycle_params, warm_steps=warm_steps, full_pool=full_pool)
        run_experiment(dataset_dir, direct, out, workers=workers, device=device.value)
        write_report(out)
        console.print(f"results in {out}/results.csv, {out}/per_case.csv, {out}/summary.md")
        return
    from app.simulation import Protocol
    from app.simulation import simulate as run_simulation

    protocol = Protocol(initial=initial, per_cycle=per_cycle, cycles=cycles, val=val, test=test, strategies=arms,
                        seeds=seeds, train_seeds=train_seeds, params=cycle_params, resample=resample,
                        full_pool=full_pool, control_fraction=control_fraction)
    results = run_simulation(dataset_dir, out, protocol, url=url, token=token, progress=console.print)
    console.print(f"{len(results)} runs; results in {out}/results.csv, {out}/per_case.csv, "
                  f"{out}/dice_vs_labelled.png, {out}/summary.md; live estimate in {out}/live.csv, "
                  f"{out}/live_estimate.png")


@cli.command("worker")
def worker_cmd(
    pool: Annotated[Pool, typer.Option(help="prefork (production) or solo (embedded)")] = Pool.prefork,
    concurrency: Annotated[int, typer.Option(help="parallel tasks; keep 1 per GPU")] = 1,
    queues: Annotated[str, typer.Option(help="queues to consume: gpu (cycles), interop (PACS imports, SEG exports)")]
    = "gpu",
    loglevel: Annotated[str, typer.Option(help="Celery log level")] = "INFO",
    quiet: Annotated[bool, typer.Option(help="no start-up banner (the embedded worker)")] = False,
) -> None:
    """Run a Celery worker: retraining cycles (queue gpu) and/or DICOMweb imports and SEG exports (queue interop)."""
    from app.core.config import get_settings
    from app.core.logging import setup_logging
    from worker.celery_app import celery_app

    settings = get_settings()
    setup_logging(settings.log_level, settings.json_logs)
    prepare_database()
    celery_app.start([
        *(["--quiet"] if quiet else []), "worker", f"--pool={pool.value}", f"--concurrency={concurrency}",
        f"--queues={queues}", f"--loglevel={loglevel}",
        "--without-gossip", "--without-mingle", "--prefetch-multiplier=1",
    ])


def _strategies(text: str) -> list[str]:
    from worker.ml.params import STRATEGY_NAMES

    arms = [s.strip() for s in text.split(",") if s.strip()]
    unknown = [a for a in arms if a not in STRATEGY_NAMES]
    if unknown or not arms:
        raise typer.BadParameter(f"unknown {', '.join(map(repr, unknown)) or 'empty list'}; choose from "
                                 f"{', '.join(STRATEGY_NAMES)}", param_hint="--strategies")
    return arms


def user_error(exc: BaseException) -> str | None:
    """The one-line message for an error the caller can fix, or None for a bug (keep the traceback)."""
    if isinstance(exc, UserError):
        return str(exc)
    errors = sys.modules.get("app.core.errors")
    if errors is not None and isinstance(exc, errors.DomainError):
        return str(exc.detail)
    sa_exc = sys.modules.get("sqlalchemy.exc")
    if sa_exc is not None and isinstance(exc, sa_exc.OperationalError):
        return f"cannot use the database (NEXTCASE_DATABASE_URL): {str(exc.orig).splitlines()[0]}"
    if isinstance(exc, PermissionError):
        return f"permission denied: {exc.filename} (set NEXTCASE_DATA_DIR to a folder you can write)"
    pydantic = sys.modules.get("pydantic")
    if pydantic is not None and isinstance(exc, pydantic.ValidationError):
        return "invalid settings: " + "; ".join(
            f"NEXTCASE_{'_'.join(map(str, e['loc'])).upper() or 'SETTINGS'}: {e['msg']}" for e in exc.errors())
    return None


def main() -> None:
    try:
        cli()
    except Exception as exc:
        message = user_error(exc)
        if message is None:
            raise
        typer.echo(f"error: {message}", err=True)
        raise SystemExit(1) from None
if __name__ == "__main__":
    main()
