"""DICOM SEG of a label version, built with highdicom from the case's kept DICOM references.

The SEG references the source series' instances one frame per slice, in the case's slice order. Source
headers were stripped at ingest, so the source "images" handed to highdicom are stubs holding only the kept
UIDs and geometry; the patient and study modules are filled in only for a STOW export, from the PACS itself
(``patient_study`` below), in memory, and never stored or logged.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from importlib.metadata import version

import highdicom as hd
import numpy as np
import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sr.codedict import codes
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from app.models import DicomReference

LOCAL_SCHEME = "99NEXTCASE"  # a private coding scheme (PS3.16 8.2: designators starting "99" are local)
ANATOMY = codes.SCT.AnatomicalStructure
ABNORMAL = hd.sr.CodedConcept("49755003", "SCT", "Morphologically Altered Structure")
PROJECT_LABEL = hd.sr.CodedConcept("LABEL", LOCAL_SCHEME, "Project label")

# Standard structures a project label may name, by normalised name -> (category, SNOMED CT concept).
_SCT = codes.SCT
STANDARD: dict[str, tuple[object, object]] = {
    **{name: (ANATOMY, code) for name, code in {
        "liver": _SCT.Liver, "brainstem": _SCT.BrainStem, "brain stem": _SCT.BrainStem,
        "spinal cord": _SCT.SpinalCord, "spinalcord": _SCT.SpinalCord, "parotid": _SCT.ParotidGland,
        "parotid gland": _SCT.ParotidGland, "left parotid": _SCT.ParotidGland, "right parotid": _SCT.ParotidGland,
        "mandible": _SCT.Mandible, "hippocampus": _SCT.Hippocampus, "kidney": _SCT.Kidney, "spleen": _SCT.Spleen,
        "pancreas": _SCT.Pancreas, "prostate": _SCT.Prostate, "heart": _SCT.Heart, "lung": _SCT.Lung,
        "brain": _SCT.Brain, "bladder": _SCT.Bladder, "esophagus": _SCT.Esophagus, "stomach": _SCT.Stomach,
        "aorta": _SCT.Aorta, "rectum": _SCT.Rectum, "femur": _SCT.Femur, "vertebra": _SCT.Vertebra,
        "left ventricle": _SCT.LeftVentricle, "gallbladder": _SCT.Gallbladder, "bone": _SCT.Bone,
        "colon": _SCT.Colon, "duodenum": _SCT.Duodenum, "trachea": _SCT.Trachea, "optic nerve": _SCT.OpticNerve,
        "eye": _SCT.Eye,
    }.items()},
    **{name: (ABNORMAL, code) for name, code in {
        "tumor": _SCT.Neoplasm, "tumour": _SCT.Neoplasm, "neoplasm": _SCT.Neoplasm, "edema": _SCT.Edema,
        "oedema": _SCT.Edema, "necrosis": _SCT.Necrosis,
    }.items()},
}
# Patient and General Study attributes highdicom copies from the source images (type 2: present, may be empty).
PATIENT_STUDY = ("PatientName", "PatientID", "PatientBirthDate", "PatientSex", "StudyDate", "StudyTime",
                 "StudyID", "AccessionNumber", "ReferringPhysicianName")


@dataclass(frozen=True)
class SegmentCode:
    label: str
    category: hd.sr.CodedConcept
    property_type: hd.sr.CodedConcept


def segment_code(index: int, name: str) -> SegmentCode:
    """SNOMED CT where the label names a standard structure, else a project-local code (99NEXTCASE L<index>)."""
    key = re.sub(r"[\s_\-]+", " ", name.strip().lower())
    if key in STANDARD:
        category, concept = STANDARD[key]
        return SegmentCode(name, _coded(category), _coded(concept))
    return SegmentCode(name, PROJECT_LABEL, hd.sr.CodedConcept(f"L{index}", LOCAL_SCHEME, name[:64]))


def _coded(code: object) -> hd.sr.CodedConcept:
    if isinstance(code, hd.sr.CodedConcept):
        return code
    return hd.sr.CodedConcept(code.value, code.scheme_designator, code.meaning)  # type: ignore[attr-defined]


def source_stubs(
    refs: DicomReference, shape: Sequence[int], patient_study: Dataset | None = None,
) -> list[Dataset]:
    """Header-only stand-ins for the source slices, in the case's slice order (no pixel data, no names)."""
    rows, columns = int(shape[1]), int(shape[0])  # ITK shape is (x, y, z): x runs along a row (columns)
    stubs = []
    for k, (sop_uid, position) in enumerate(zip(refs.instances, refs.positions, strict=True)):
        ds = Dataset()
        ds.file_meta = FileMetaDataset()
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds.SOPClassUID = refs.sop_class_uid
        ds.SOPInstanceUID = sop_uid
        ds.StudyInstanceUID = refs.study_instance_uid
        ds.SeriesInstanceUID = refs.series_instance_uid
        ds.FrameOfReferenceUID = refs.frame_of_reference_uid
        ds.Modality = "OT"
        ds.InstanceNumber = k + 1
        ds.Rows, ds.Columns = rows, columns
        ds.ImagePositionPatient = [float(v) for v in position]
        ds.ImageOrientationPatient = [float(v) for v in refs.orientation]
        ds.PixelSpacing = [float(v) for v in refs.pixel_spacing]
        ds.SliceThickness = _slice_spacing(refs)
        for keyword in PATIENT_STUDY:
            value = patient_study.get(keyword) if patient_study is not None else None
            setattr(ds, keyword, value if value is not None else "")
        stubs.append(ds)
    return stubs


def _slice_spacing(refs: DicomReference) -> float:
    positions = np.asarray(refs.positions, dtype=float)
    return float(np.median(np.linalg.norm(np.diff(positions, axis=0), axis=1))) if len(positions) > 1 else 1.0


def build_seg(
    refs: DicomReference, shape: Sequence[int], mask_zyx: np.ndarray, labels: Sequence[str], *,
    label_version: int, patient_study: Dataset | None = None,
) -> pydicom.Dataset:
    """A BINARY DICOM SEG of ``mask_zyx`` (class indices on the case grid), one segment per foreground label.

    Every label version is a mask drawn by a person (annotators, admins, or reference masks imported with
    ``import-msd``); model predictions never become label versions, so every segment's algorithm type is MANUAL.
    Frames are not omitted when empty: segment s has one frame per source slice, in the source's slice order.
    """
    if mask_zyx.shape != (len(refs.instances), int(shape[1]), int(shape[0])):
        raise ValueError(f"mask shape {mask_zyx.shape} does not match the referenced series")
    descriptions = []
    for index, name in enumerate(labels[1:], start=1):
        code = segment_code(index, str(name))
        descriptions.append(hd.seg.SegmentDescription(
            segment_number=index, segment_label=code.label[:64], segmented_property_category=code.category,
            segmented_property_type=code.property_type, algorithm_type=hd.seg.SegmentAlgorithmTypeValues.MANUAL,
        ))
    pixels = np.zeros((*mask_zyx.shape, len(descriptions)), dtype=bool)
    for index in range(1, len(labels)):
        pixels[..., index - 1] = mask_zyx == index
    return hd.seg.Segmentation(
        source_images=source_stubs(refs, shape, patient_study),
        pixel_array=pixels,
        segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
        segment_descriptions=descriptions,
        series_instance_uid=generate_uid(),
        series_number=900,
        sop_instance_uid=generate_uid(),
        instance_number=1,
        manufacturer="NextCase",
        manufacturer_model_name="NextCase",
        software_versions=_software_version(),
        device_serial_number="0",
        content_label="NEXTCASE",
        content_description=f"label version {label_version}"[:64],
        series_description=f"NextCase label v{label_version}"[:64],
        omit_empty_frames=False,
    )


def _software_version() -> str:
    try:
        return version("nextcase")
    except Exception:
        return "0"


def frames_by_slice(seg: pydicom.Dataset, instances: Sequence[str]) -> dict[tuple[int, int], np.ndarray]:
    """(segment number, slice index) -> frame, read back from a SEG: what the tests compare with the mask."""
    order = {uid: k for k, uid in enumerate(instances)}
    pixels = seg.pixel_array
    if pixels.ndim == 2:
        pixels = pixels[None]
    out = {}
    for frame, group in zip(pixels, seg.PerFrameFunctionalGroupsSequence, strict=True):
        segment = int(group.SegmentIdentificationSequence[0].ReferencedSegmentNumber)
        source = group.DerivationImageSequence[0].SourceImageSequence[0].ReferencedSOPInstanceUID
        out[(segment, order[str(source)])] = np.asarray(frame)
    return out
