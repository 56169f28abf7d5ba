"""Bulk import of a Medical Segmentation Decathlon folder through the same services as the API."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from sqlalchemy.orm import Session

from app.auth.service import get_or_create_system_user
from app.cases import service as cases
from app.cases.imaging import UploadedFile, read_label_upload
from app.core.db import session_scope
from app.core.errors import Conflict, DomainError
from app.core.storage import BlobStore
from app.models import Project
from app.projects import service as projects

IMPORTER = "importer"
MODALITIES = {"CT": "CT", "MRI": "MR", "MR": "MR", "T1": "MR", "T2": "MR", "FLAIR": "MR"}


@dataclass
class MsdDataset:
    root: Path
    name: str
    modality: str
    labels: list[str]
    pairs: list[tuple[Path, Path | None]]


@dataclass
class ImportReport:
    imported: int = 0
    skipped: int = 0  # already present (same image): makes an interrupted import resumable
    failed: list[str] = field(default_factory=list)


def read_msd(root: Path) -> MsdDataset:
    meta_path = root / "dataset.json"
    if not meta_path.is_file():
        raise ValueError(f"{root} has no dataset.json: not a Medical Segmentation Decathlon folder")
    meta = json.loads(meta_path.read_text())
    label_map = {int(k): str(v) for k, v in meta["labels"].items()}
    labels = [label_map[i] for i in range(len(label_map))]
    modality = MODALITIES.get(str(meta.get("modality", {}).get("0", "")).upper(), "MR")
    pairs = [
        (root / entry["image"], root / entry["label"] if entry.get("label") else None)
        for entry in meta.get("training", [])
    ]
    return MsdDataset(root, str(meta.get("name", root.name)), modality, labels, pairs)


def msd_subset(source: Path, target: Path, *, count: int | None = None, labelled: int | None = None) -> Path:
    """Write ``target/dataset.json`` naming the first ``count`` cases of ``source`` by absolute path.

    Masks are kept for the first ``labelled`` of them (all when None), so importing it with labels
    leaves the rest unlabelled. No image is copied.
    """
    meta = json.loads((source / "dataset.json").read_text())
    meta["training"] = meta["training"][:count]
    for i, entry in enumerate(meta["training"]):
        entry["image"] = str((source / entry["image"]).resolve())
        if "label" in entry and (labelled is None or i < labelled):
            entry["label"] = str((source / entry["label"]).resolve())
        else:
            entry.pop("label", None)
    meta["numTraining"] = len(meta["training"])
    target.mkdir(parents=True, exist_ok=True)
    (target / "dataset.json").write_text(json.dumps(meta, indent=1))
    return target


def ensure_project(session: Session, name: str, dataset: MsdDataset) -> Project:
    project = projects.find_project(session, name)
    if project is None:
        return projects.create_project(session, name, dataset.modality, dataset.labels)
    if len(project.labels) != len(dataset.labels):
        raise ValueError(f"project {name!r} has {len(project.labels)} classes, the dataset {len(dataset.labels)}")
    return project


def patient_id_for(image: Path) -> str:
    return image.name.split(".")[0]


def import_msd(
    project_name: str, root: Path, store: BlobStore, *, with_labels: bool,
    on_case: Callable[[str], None] | None = None,
) -> ImportReport:
    dataset = read_msd(root)
    with session_scope() as session:
        ensure_project(session, project_name, dataset)
        get_or_create_system_user(session, IMPORTER)
    report = ImportReport()
    for image_path, label_path in dataset.pairs:
        try:
            _import_one(project_name, len(dataset.labels), image_path, label_path if with_labels else None, store)
            report.imported += 1
        except Conflict:
            report.skipped += 1
        except DomainError as exc:
            report.failed.append(f"{image_path.name}: {exc.detail}")
        if on_case is not None:
            on_case(image_path.name)
    return report


def _import_one(
    project_name: str, num_classes: int, image_path: Path, label_path: Path | None, store: BlobStore
) -> None:
    # Both files are validated before anything is stored; then one transaction per case, so the image
    # and its label land together or not at all.
    image = cases.decode_case([UploadedFile(image_path.name, image_path.read_bytes())])
    mask = None
    if label_path is not None:
        label = UploadedFile(label_path.name, label_path.read_bytes())
        mask = read_label_upload(label, image.geometry, num_classes)
    with session_scope() as session:
        project = projects.find_project(session, project_name)
        assert project is not None
        importer = get_or_create_system_user(session, IMPORTER)
        case = cases.ingest_case(session, store, project, patient_id_for(image_path), image, importer)
        if mask is not None:
            cases.upload_label(session, store, case.id, mask, importer)
