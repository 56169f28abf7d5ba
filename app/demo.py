"""Seed an empty embedded instance so the next-case flow works at once.

Generates thoracic CT phantoms (or takes an MSD folder), imports them with a few labelled cases
and two labelled validation cases, creates an annotator, and queues the first cycle.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import func, select

from app.auth import service as auth
from app.bulk_import import import_msd, msd_subset, read_msd
from app.core import db
from app.core.storage import BlobStore
from app.cycles import service as cycles
from app.cycles.schemas import CycleCreate
from app.models import Case, Project, User
from app.phantom import write_dataset

DEMO_PROJECT = "demo-thorax"
DEMO_DURATION = "about 5 minutes on two idle CPU cores (measured), longer on a busy machine"
# Small enough for a first cycle on a laptop CPU; the time is measured by tests/test_demo.py's run.
# No augmentation: the patch is the whole phantom, and augmenting it cost more than half of the training time.
DEMO_CYCLE = CycleCreate(epochs=20, augment=False, learning_rate=0.003, batch_size=2, patch_size=[32, 64, 64],
                         mc_passes=5, channels=[8, 16, 32], strides=[2, 2], samples_per_volume=2, seed=0)


@dataclass(frozen=True)
class Demo:
    project_id: int
    cycle_id: int
    annotator_token: str


def needs_seeding() -> bool:
    with db.session_scope() as session:
        return not session.scalar(select(func.count()).select_from(Project))


def seed(store: BlobStore, workdir: Path, dataset: Path | None = None, labelled: int = 8) -> Demo:
    """Import the demo data, create user 'annotator', queue cycle 1 (the caller enqueues it after commit)."""
    source = dataset or write_dataset(workdir / "phantoms", n=20, seed=0)
    name = DEMO_PROJECT if dataset is None else read_msd(dataset).name.replace(" ", "-").lower()
    import_msd(name, msd_subset(source, workdir / "demo-import", labelled=labelled), store, with_labels=True)
    with db.session_scope() as session:
        project = session.scalar(select(Project).where(Project.name == name))
        assert project is not None
        labelled_ids = list(session.scalars(select(Case.id).where(
            Case.project_id == project.id, Case.status == "labelled").order_by(Case.id)))
        for case in session.scalars(select(Case).where(Case.id.in_(labelled_ids[:2]))):
            case.split = "validation"
        annotator = session.scalar(select(User).where(User.name == "annotator")) or auth.create_user(
            session, "annotator", "annotator")
        token = auth.issue_token(session, annotator).token
        admin = session.scalar(select(User).where(User.role == "admin").order_by(User.id))
        assert admin is not None
        cycle = cycles.create_cycle(session, project, DEMO_CYCLE, admin)
        return Demo(project.id, cycle.id, token)


def instructions(demo: Demo, admin_token: str | None, base: str) -> str:
    """The first steps, with the ids and lease token each command returns; the tokens come last."""
    api = f"{base}/api/v1"
    auth = '-H "Authorization: Bearer $ANNOTATOR"'
    field = "python3 -c 'import sys, json; print(json.load(sys.stdin){})'"
    admin = f"export ADMIN={admin_token}\n" if admin_token else ""
    return f"""
Demo project {demo.project_id} is ready: 20 phantom chest CTs, 6 labelled + 2 validation cases. Cycle {demo.cycle_id}
trains on the embedded worker: {DEMO_DURATION}. Progress follows below.
API {api}, interactive docs {base}/docs (Authorize with a token below).

# claim the next case: a lease, so no one else gets it; keep LEASE to renew, skip or release it
CLAIM=$(curl -fsS -X POST {auth} {api}/projects/{demo.project_id}/queue/next)
CASE=$(echo "$CLAIM" | {field.format('["case"]["id"]')})
LEASE=$(echo "$CLAIM" | {field.format('["lease"]["token"]')})
curl -fsS {auth} -o image.nii.gz {api}/cases/$CASE/image
# once cycle {demo.cycle_id} is done: the model's pre-segmentation as a starting point
curl -fsS {auth} -o mask.nii.gz {api}/cases/$CASE/prediction
# edit mask.nii.gz (3D Slicer, ITK-SNAP), then upload it as a new label version (this ends the lease)
curl -fsS -X PUT {auth} -F file=@mask.nii.gz {api}/cases/$CASE/label
# your live leases, with their tokens: curl -fsS {auth} "{api}/leases?mine=true"

Tokens (shown once; store them somewhere safe, `nextcase create-token NAME` issues a new one):
{admin}export ANNOTATOR={demo.annotator_token}
"""
