from __future__ import annotations

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from app.audit import service as audit
from app.core.config import get_settings
from app.core.errors import Conflict, NotFound
from app.models import Project, User, random_seed


def create_project(
    session: Session, name: str, modality: str, labels: list[str], *, control_fraction: float | None = None,
    control_seed: int | None = None, annotators_can_upload_cases: bool = False, train_on: str = "submitted",
    readers_per_case: int = 1, consensus_method: str = "staple",
) -> Project:
    if session.scalar(select(Project).where(Project.name == name)) is not None:
        raise Conflict(f"a project named {name!r} already exists", field="name")
    fraction = get_settings().control_fraction if control_fraction is None else control_fraction
    project = Project(name=name, modality=modality, labels=labels, control_fraction=fraction,
                      control_seed=random_seed() if control_seed is None else control_seed,
                      annotators_can_upload_cases=annotators_can_upload_cases, train_on=train_on,
                      readers_per_case=readers_per_case, consensus_method=consensus_method)
    session.add(project)
    session.flush()
    return project


def update_control(
    session: Session, project_id: int, user: User, *, fraction: float | None, seed: int | None
) -> Project:
    """Change the control arm; claims already served keep the arm they were served from."""
    project = lock_project(session, project_id)
    changes = {name: value for name, value in (("control_fraction", fraction), ("control_seed", seed))
               if value is not None and getattr(project, name) != value}
    for name, value in changes.items():
        setattr(project, name, value)
    if changes:
        audit.record(session, "project.control", user_id=user.id, project_id=project.id, changes=changes)
    return project


# PostgreSQL: claims of a project queue on this advisory lock (pg_advisory_xact_lock(CLAIM_LOCK, project id)), not on
# the project row. A claim is one statement that locks the row and then updates it; had another transaction queued on
# the row meanwhile, the update would wait for that transaction and that one for the claim (a deadlock). So whatever
# writes or locks the project row takes this lock first, and no one waits on the row while a claim holds it.
CLAIM_LOCK = 0x4E43


def lock_claims(session: Session, project_id: int) -> None:
    """Take the project's claim lock until the transaction ends (PostgreSQL; SQLite serialises writers anyway)."""
    if session.get_bind().dialect.name == "postgresql":
        session.execute(select(func.pg_advisory_xact_lock(CLAIM_LOCK, project_id)))


def lock_project(session: Session, project_id: int) -> Project:
    """The project under a row lock: a settings change waits for claims in flight, and they for it."""
    lock_claims(session, project_id)
    project = session.get(Project, project_id, with_for_update={"key_share": True}, populate_existing=True)
    if project is None:
        raise NotFound(f"project {project_id} does not exist", field="project_id")
    return project


def get_project(session: Session, project_id: int) -> Project:
    project = session.get(Project, project_id)
    if project is None:
        raise NotFound(f"project {project_id} does not exist", field="project_id")
    return project


def find_project(session: Session, name: str) -> Project | None:
    return session.scalar(select(Project).where(Project.name == name))


def list_projects(session: Session) -> list[Project]:
    return list(session.scalars(select(Project).order_by(Project.id)))


def set_annotators_can_upload_cases(session: Session, project: Project, allowed: bool, user: User) -> Project:
    if project.annotators_can_upload_cases != allowed:
        lock_claims(session, project.id)
        project.annotators_can_upload_cases = allowed
        audit.record(session, "project.settings", user_id=user.id, project_id=project.id,
                     annotators_can_upload_cases=allowed)
    return project


def project_ids(session: Session) -> list[int]:
    return list(session.scalars(select(Project.id).order_by(Project.id)))
