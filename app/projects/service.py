from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from app.audit import service as audit
from app.core.errors import Conflict, NotFound
from app.models import Project, User


def create_project(
    session: Session, name: str, modality: str, labels: list[str], annotators_can_upload_cases: bool = False
) -> Project:
    if session.scalar(select(Project).where(Project.name == name)) is not None:
        raise Conflict(f"a project named {name!r} already exists", field="name")
    project = Project(name=name, modality=modality, labels=labels,
                      annotators_can_upload_cases=annotators_can_upload_cases)
    session.add(project)
    session.flush()
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
        project.annotators_can_upload_cases = allowed
        audit.record(session, "project.settings", user_id=user.id, project_id=project.id,
                     annotators_can_upload_cases=allowed)
    return project
