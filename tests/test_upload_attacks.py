"""Hostile and broken uploads: detached data files, truncated payloads, impossible voxels and geometry.

Each is refused with a 400 that names the problem, and leaves no row and no blob behind, for case
uploads (admin) and label uploads (annotator) alike. No byte of a server file may reach a response.
"""

from __future__ import annotations

import gzip
import struct
from collections.abc import Callable
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk
from fastapi.testclient import TestClient

from tests.conftest import Login
from tests.factories import (
    create_project,
    dicom_slices,
    encode,
    label_like,
    snapshot,
    upload_case,
    upload_label,
    volume,
    zip_files,
)

SHAPE_XYZ = (8, 7, 6)
PIXDIM_OFFSET = 76  # NIfTI-1: float32 pixdim[8]
VOX_OFFSET = 108  # NIfTI-1: float32 vox_offset
# Bytes a server file might hold: printable, and each also a valid class index so a label upload
# of it would pass value checks if it were ever read.
SECRET = bytes([0, 1, 2] * (8 * 7 * 6 // 3)) + b"TOP-SECRET-API-KEY"


@pytest.fixture
def server_file(tmp_path: Path) -> Path:
    path = tmp_path / "server-secret.raw"
    path.write_bytes(SECRET)
    return path


def _relative_to_root(path: Path) -> str:
    # Climb far enough from any temporary directory to reach /, then descend to the file.
    return "../" * 40 + str(path).lstrip("/")


def _nrrd(data_file: str, extra: str = "") -> bytes:
    header = ("NRRD0004\ntype: uint8\ndimension: 3\nsizes: 8 7 6\nspacings: 0.8 0.9 2.5\nencoding: raw\n"
              f"data file: {data_file}\n{extra}\n")
    return header.encode()


def _mha(data_file: str, extra: str = "") -> bytes:
    header = ("ObjectType = Image\nNDims = 3\nBinaryData = True\nCompressedData = False\n"
              "ElementSpacing = 0.8 0.9 2.5\nDimSize = 8 7 6\nElementType = MET_UCHAR\n"
              f"ElementDataFile = {data_file}\n{extra}")
    return header.encode()


DETACHED: dict[str, Callable[[Path], tuple[str, bytes]]] = {
    "nrrd absolute": lambda p: ("x.nrrd", _nrrd(str(p))),
    "nrrd relative": lambda p: ("x.nrrd", _nrrd(_relative_to_root(p))),
    "nrrd LIST": lambda p: ("x.nrrd", _nrrd("LIST", f"{p}\n")),
    "mha absolute": lambda p: ("x.mha", _mha(str(p))),
    "mha relative": lambda p: ("x.mha", _mha(_relative_to_root(p))),
    "mha LIST": lambda p: ("x.mha", _mha("LIST 3D", f"{p}\n")),
    # Spellings the readers accept and a naive parser would miss (MetaIO keys end at ":" too; teem ends
    # a line at a lone carriage return and matches "LIST" as a prefix).
    "mha colon before LOCAL": lambda p: ("x.mha", _mha("LOCAL", "").replace(
        b"ElementDataFile = LOCAL", f"ElementDataFile: {p}\nElementDataFile = LOCAL".encode()) + bytes(336)),
    "nrrd after a lone CR": lambda p: ("x.nrrd", _nrrd("LOCAL").replace(
        b"data file: LOCAL", f"content: x\rdata file: {p}".encode()) + bytes(336)),
    "nrrd LIST:=": lambda p: ("x.nrrd", _nrrd("LIST:=", f"{p}\n") + bytes(336)),
}


def _assert_no_secret(response: Any) -> None:
    assert b"TOP-SECRET" not in response.content
    assert "[0, 1, 2" not in response.text and "0..2" not in response.text.replace("0..5", "")


@pytest.mark.parametrize("name", list(DETACHED))
def test_detached_data_file_refused_as_case(
    client: TestClient, admin: Login, settings_env: Path, server_file: Path, name: str
) -> None:
    project = create_project(client, admin.headers)
    filename, data = DETACHED[name](server_file)
    before = snapshot(settings_env)
    r = upload_case(client, admin.headers, project["id"], data, filename=filename)
    assert r.status_code == 400, r.text
    assert "separate data file" in r.json()["detail"]
    _assert_no_secret(r)
    assert snapshot(settings_env) == before
    assert not any(SECRET in p.read_bytes() for p in settings_env.rglob("*") if p.is_file() and p != server_file)


@pytest.mark.parametrize("name", list(DETACHED))
def test_detached_data_file_refused_as_label(
    client: TestClient, admin: Login, annotator: Login, settings_env: Path, server_file: Path, name: str
) -> None:
    project = create_project(client, admin.headers, labels=("background", "a"))  # values 2 would be refused
    case = upload_case(client, admin.headers, project["id"], encode(volume())).json()
    filename, data = DETACHED[name](server_file)
    before = snapshot(settings_env)
    r = upload_label(client, annotator.headers, case["id"], data, filename=filename)
    assert r.status_code == 400, r.text
    assert "separate data file" in r.json()["detail"]
    _assert_no_secret(r)
    assert snapshot(settings_env) == before


def _cut(data: bytes, keep: float = 0.5) -> bytes:
    return data[: int(len(data) * keep)]


def _big_volume() -> sitk.Image:
    return volume((20, 24, 28), seed=3)


TRUNCATED: dict[str, tuple[str, Callable[[], bytes], str]] = {
    ".nii.gz cut in half": ("scan.nii.gz", lambda: _cut(encode(_big_volume(), ".nii.gz")),
                            "has a compressed stream that ends early or is corrupt"),
    ".nii cut in half": ("scan.nii", lambda: _cut(encode(_big_volume(), ".nii")), "is truncated"),
    ".nrrd cut in half": ("scan.nrrd", lambda: _cut(encode(_big_volume(), ".nrrd")), "is truncated"),
    ".mha cut in half": ("scan.mha", lambda: _cut(encode(_big_volume(), ".mha")), "is truncated"),
    ".nii.gz whole stream, payload short": (
        "scan.nii.gz", lambda: gzip.compress(_cut(encode(_big_volume(), ".nii"), 0.9)), "is truncated"),
}


@pytest.mark.parametrize("name", list(TRUNCATED))
def test_truncated_case_upload_refused(client: TestClient, admin: Login, settings_env: Path, name: str) -> None:
    project = create_project(client, admin.headers)
    filename, make, expected = TRUNCATED[name]
    before = snapshot(settings_env)
    r = upload_case(client, admin.headers, project["id"], make(), filename=filename)
    assert r.status_code == 400, r.text
    assert expected in r.json()["detail"] and r.json()["field"] == "file"
    assert snapshot(settings_env) == before


@pytest.mark.parametrize("suffix", [".nii.gz", ".nrrd"])
def test_truncated_label_refused(
    client: TestClient, admin: Login, annotator: Login, settings_env: Path, suffix: str
) -> None:
    project = create_project(client, admin.headers)
    image = _big_volume()
    case = upload_case(client, admin.headers, project["id"], encode(image)).json()
    data = _cut(encode(label_like(image, (0, 1, 2)), suffix))
    before = snapshot(settings_env)
    r = upload_label(client, annotator.headers, case["id"], data, filename=f"label{suffix}")
    assert r.status_code == 400, r.text
    assert snapshot(settings_env) == before


def _nan_volume() -> bytes:
    return encode(volume(dtype=np.float32) * float("nan"))


def _inf_voxel() -> bytes:
    image = volume(dtype=np.float32)
    array = sitk.GetArrayFromImage(image)
    array[2, 3, 4] = np.inf
    bad = sitk.GetImageFromArray(array)
    bad.CopyInformation(image)
    return encode(bad, ".nrrd")


def _nifti_zero_spacing() -> bytes:
    raw = bytearray(nib.Nifti1Image(np.zeros(SHAPE_XYZ, np.int16), np.diag([0.8, 0.9, 2.5, 1.0])).to_bytes())
    struct.pack_into("<f", raw, PIXDIM_OFFSET + 2 * 4, 0.0)  # pixdim[2]: the y spacing
    return gzip.compress(bytes(raw))


def _nrrd_zero_spacing() -> bytes:
    data = encode(volume(), ".nrrd")
    return data.replace(b"(0,0.90000000000000002,0)", b"(0,0,0)")


def _unsafe_zip() -> bytes:
    return zip_files({f"../../{name}": data for name, data in dicom_slices(3).items()})


def _nifti_nan_offset() -> bytes:
    raw = bytearray(nib.Nifti1Image(np.zeros(SHAPE_XYZ, np.int16), np.eye(4)).to_bytes())
    struct.pack_into("<f", raw, VOX_OFFSET, float("nan"))
    return bytes(raw)


def _nrrd_header_value(field: str) -> bytes:
    return (f"NRRD0004\ntype: uint8\ndimension: 3\nsizes: 8 7 6\nencoding: raw\n{field}\n\n").encode() + bytes(336)


REFUSED: dict[str, tuple[str, Callable[[], bytes], str]] = {
    "NIfTI NaN data offset": ("scan.nii", _nifti_nan_offset, "declares the data offset nan"),
    "NRRD byte skip not a number": ("scan.nrrd", lambda: _nrrd_header_value("byte skip: abc"),
                                    "declares the byte skip 'abc', which is not a whole number"),
    "MHA channels not a number": ("scan.mha", lambda: _mha("LOCAL").replace(
        b"ElementType", b"ElementNumberOfChannels = x\nElementType") + bytes(336),
        "declares the ElementNumberOfChannels 'x', which is not a whole number"),
    "all NaN": ("scan.nii.gz", _nan_volume, "holds NaN or infinite voxel values"),
    "one infinite voxel": ("scan.nrrd", _inf_voxel, "holds NaN or infinite voxel values"),
    "NIfTI zero spacing": ("scan.nii.gz", _nifti_zero_spacing,
                           "'scan.nii.gz' has the voxel spacing [0.8, 0, 2.5]; every spacing must be a positive, "
                           "finite number"),
    "NRRD zero spacing": ("scan.nrrd", _nrrd_zero_spacing, "every spacing must be a positive, finite number"),
    "zip member climbing out": ("series.zip", _unsafe_zip,
                                "'series.zip' holds a member with an unsafe path (absolute or containing '..'); "
                                "re-create the archive with relative names"),
}


@pytest.mark.parametrize("name", list(REFUSED))
def test_bad_image_refused_not_altered(client: TestClient, admin: Login, settings_env: Path, name: str) -> None:
    project = create_project(client, admin.headers)
    filename, make, expected = REFUSED[name]
    before = snapshot(settings_env)
    r = upload_case(client, admin.headers, project["id"], make(), filename=filename)
    assert r.status_code == 400, r.text
    assert expected in r.json()["detail"]
    assert snapshot(settings_env) == before


def test_complete_uploads_of_every_encoding_still_accepted(client: TestClient, admin: Login, tmp_path: Path) -> None:
    """The checks above must not refuse honest files: compressed NRRD and MHA too."""
    project = create_project(client, admin.headers)
    for i, (suffix, compress) in enumerate([(".nrrd", True), (".mha", True), (".nii", False), (".nii.gz", True)]):
        path = tmp_path / f"ok{suffix}"
        sitk.WriteImage(volume((20, 24, 28), seed=10 + i), str(path), useCompression=compress)
        r = upload_case(client, admin.headers, project["id"], path.read_bytes(), filename=path.name)
        assert r.status_code == 201, (suffix, r.text)
