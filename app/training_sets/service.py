"""Training sets out: the latest label version of every labelled case, in the MSD or nnU-Net v2 raw layout.

Images and masks are the stored canonical NIfTI files, copied byte for byte, so ``nextcase import-msd`` of an
exported MSD folder reproduces the same images and masks voxel for voxel. File names carry the case id only
(never a patient id or pseudonym).
"""

from __future__ import annotations

import re
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy.orm import Session

from app.cases import service as cases
from app.core.errors import InvalidRequest
from app.core.storage import BlobStore, get_blob_store
from app.projects import service as projects
from app.review import service as review

FORMATS = ("msd", "nnunet")


@dataclass(frozen=True)
class ExportFile:
    path: str  # relative, with forward slashes
    blob_key: str


@dataclass(frozen=True)
class TrainingSet:
    dataset_json: dict[str, Any]
    cases: list[tuple[int, list[ExportFile]]]  # case id and its image and mask files

    @property
    def files(self) -> list[ExportFile]:
        return [f for _, files in self.cases for f in files]


def parse_splits(text: str) -> list[str]:
    splits = [s.strip() for s in text.split(",") if s.strip()]
    unknown = [s for s in splits if s not in cases.SPLITS]
    if unknown or not splits:
        raise InvalidRequest(f"split must be a comma-separated list of {', '.join(cases.SPLITS)}, got {text!r}",
                             field="split")
    return splits


def plan(session: Session, project_id: int, fmt: str, splits: list[str]) -> TrainingSet:
    """What an export writes: the dataset.json and, per labelled case, its image and mask blobs."""
    if fmt not in FORMATS:
        raise InvalidRequest(f"format must be one of {', '.join(FORMATS)}, got {fmt!r}", field="format")
    project = projects.get_project(session, project_id)
    stem = re.sub(r"[^A-Za-z0-9]+", "", project.name) or "case"
    entries: list[tuple[int, list[ExportFile]]] = []
    training = []
    # What the cycles train on: review state, train_on and consensus decide, not merely the newest version.
    labelled = sorted((pair for split in splits for pair in review.training_labels(session, get_blob_store(), project,
                                                                                    split)), key=lambda p: p[0].id)
    for case, label_key in labelled:
        name = f"{stem}_{case.id:05d}"
        image = f"imagesTr/{name}_0000.nii.gz" if fmt == "nnunet" else f"imagesTr/{name}.nii.gz"
        label = f"labelsTr/{name}.nii.gz"
        entries.append((case.id, [ExportFile(image, case.blob_key), ExportFile(label, label_key)]))
        training.append({"image": f"./{image}", "label": f"./{label}"})
    channel = "CT" if project.modality == "CT" else "MRI"
    meta: dict[str, Any]
    if fmt == "msd":
        meta = {"name": project.name, "description": "exported from NextCase (the label each case trains on)",
                "tensorImageSize": "3D", "modality": {"0": channel},
                "labels": {str(i): name for i, name in enumerate(project.labels)},
                "numTraining": len(training), "numTest": 0, "training": training, "test": []}
    else:
        meta = {"name": project.name, "description": "exported from NextCase (the label each case trains on)",
                "channel_names": {"0": channel}, "labels": {name: i for i, name in enumerate(project.labels)},
                "numTraining": len(training), "file_ending": ".nii.gz"}
    return TrainingSet(meta, entries)


def write_folder(training_set: TrainingSet, store: BlobStore, out: Path,
                 on_case: Callable[[int], None] | None = None) -> None:
    import json

    for folder in ("imagesTr", "labelsTr"):
        (out / folder).mkdir(parents=True, exist_ok=True)
    for case_id, files in training_set.cases:
        for f in files:
            (out / f.path).write_bytes(store.read(f.blob_key))
        if on_case is not None:
            on_case(case_id)
    (out / "dataset.json").write_text(json.dumps(training_set.dataset_json, indent=2))


class _Pipe:
    """A write-only file object whose bytes are taken out as they come: zipfile streams into it."""

    def __init__(self) -> None:
        self.chunks: list[bytes] = []
        self.size = 0

    def write(self, data: bytes) -> int:
        self.chunks.append(bytes(data))
        self.size += len(data)
        return len(data)

    def tell(self) -> int:
        return self.size

    def flush(self) -> None:
        pass

    def close(self) -> None:
        pass

    def take(self) -> bytes:
        out, self.chunks = b"".join(self.chunks), []
        return out


def zip_stream(training_set: TrainingSet, store: BlobStore) -> Iterator[bytes]:
    """The export as a zip, produced file by file (one blob in memory at a time); NIfTI is already gzip'd."""
    import json

    pipe = _Pipe()
    with zipfile.ZipFile(pipe, "w", compression=zipfile.ZIP_STORED) as archive:
        archive.writestr("dataset.json", json.dumps(training_set.dataset_json, indent=2))
        yield pipe.take()
        for f in training_set.files:
            archive.writestr(f.path, store.read(f.blob_key))
            yield pipe.take()
    yield pipe.take()
