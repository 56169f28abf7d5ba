"""The part of the MONAI Label REST API that 3D Slicer's MONAI Label module and MONAILabelClient use.

Rules from the compatibility study (shared/design/monailabel-compat.md): paths are declared with and
without the trailing slash (the client follows no redirects); success is always 200; GET and DELETE
routes never read a body (the client sends stale Content-Length headers); multipart filenames are
client paths, so only their suffix is used. The lease holder is the authenticated NextCase user,
never the client-sent ``client_id``.
"""

from __future__ import annotations

import json
import secrets
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import SimpleITK as sitk
from fastapi import APIRouter, BackgroundTasks, Depends, File, Form, Query, Request, Response, UploadFile
from fastapi.responses import FileResponse, JSONResponse
from pydantic import ValidationError
from sqlalchemy.orm import Session

from app.auth import service as auth
from app.auth.deps import SessionDep, authenticated_user, bearer_token, current_user
from app.campaign import service as campaign
from app.cases import service as cases
from app.cases.imaging import UploadedFile, read_nifti
from app.core.db import session_scope
from app.core.errors import (
    COMMON_PROBLEMS,
    InvalidLabelValues,
    InvalidRequest,
    NotFound,
    Unauthorized,
    UnsupportedFormat,
    problem_responses,
)
from app.core.params import Id
from app.core.storage import BlobStore, get_blob_store
from app.cycles import service as cycles
from app.cycles.schemas import CycleCreate
from app.models import Case, Project, User
from app.monailabel import service
from app.projects.service import get_project
from app.queue import service as queue

router = APIRouter(prefix="/monailabel/{project_id}", tags=["monailabel"],
                   responses=problem_responses(*COMMON_PROBLEMS, 400, 409, 410, 411, 413, 415, 429, 503))
UserDep = Annotated[User, Depends(current_user)]
StoreDep = Annotated[BlobStore, Depends(get_blob_store)]
LABEL_SUFFIXES = (".seg.nrrd", ".nii.gz", ".nii", ".nrrd")
IMAGE_SUFFIXES = (".nii.gz", ".nii", ".nrrd", ".mha", ".zip", ".dcm")


def route(method: str, path: str, **kwargs: Any) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Declare ``path`` and its twin with/without the trailing slash, so no request is redirected."""
    twin = path.rstrip("/") if path.endswith("/") else path + "/"

    def register(func: Callable[..., Any]) -> Callable[..., Any]:
        router.add_api_route(path, func, methods=[method], **kwargs)
        router.add_api_route(twin, func, methods=[method], include_in_schema=False, **kwargs)
        return func

    return register


# --- auth --------------------------------------------------------------------------------------


@route("GET", "/auth/")
def auth_info(project_id: Id) -> dict[str, Any]:
    return {"enabled": True, "client_id": "nextcase", "realm": f"nextcase-project-{project_id}"}


@route("POST", "/auth/token")
def auth_token(
    project_id: Id, username: Annotated[str, Form()], password: Annotated[str, Form()],
    grant_type: Annotated[str, Form()] = "password",
) -> dict[str, Any]:
    """Log in with the NextCase user name and one of that user's API tokens as the password."""
    with session_scope() as session:
        user = auth.authenticate(session, password)
        if user.name != username:
            raise Unauthorized("user name and token do not match")
    return {"access_token": password, "token_type": "Bearer", "username": username}


@route("GET", "/auth/token/valid")
def auth_token_valid(project_id: Id, user: UserDep) -> dict[str, Any]:
    return {"valid": True, "username": user.name}


# --- info and next sample ----------------------------------------------------------------------


@route("GET", "/info/")
def info(project_id: Id, session: SessionDep, _: UserDep) -> dict[str, Any]:
    return service.info(session, get_project(session, project_id))


@route("POST", "/activelearning/{strategy}")
def activelearning(project_id: Id, strategy: str, session: SessionDep, user: UserDep) -> dict[str, Any]:
    service.check_strategy(strategy)
    return service.next_sample(session, get_project(session, project_id), user)


# --- datastore ---------------------------------------------------------------------------------


def _optional_user(request: Request) -> User | None:
    """The bearer's user, or None without a bearer header; a bad token is 401.

    A dependency, so it runs before the route touches the request's session: on SQLite the first
    statement of that session takes the write lock, and authenticating in a second session after
    it would wait for the lock this same request holds (60 s, then "database is locked").
    """
    try:
        bearer_token(request)
    except Unauthorized:
        return None
    return authenticated_user(request)


OptionalUserDep = Annotated[User | None, Depends(_optional_user)]


@route("GET", "/datastore/image", response_class=FileResponse)
def datastore_image(
    project_id: Id, user: OptionalUserDep, session: SessionDep, store: StoreDep, image: str = Query(...)
) -> FileResponse:
    """The case image. Slicer downloads it without a token: the lease-scoped id is the credential."""
    project = get_project(session, project_id)
    if user is not None:
        case = service.resolve(session, project, user, image)
        queue.touch(session, case, user)
    else:
        found = service.case_by_capability(session, project, service.parse_image_id(image))
        if found is None:
            raise Unauthorized("this image needs a bearer token, or the id of your live lease on it")
        # Not lease activity: the id may sit in a cache file name or a proxy log, and whoever polls it
        # must not keep the lease alive forever. The holder's authenticated calls extend it.
        case, _holder = found
    return FileResponse(store.path(case.blob_key), media_type="application/gzip", filename=f"{image}.nii.gz")


def _label_upload(label_file: UploadFile) -> UploadedFile:
    name = (label_file.filename or "").replace("\\", "/").rsplit("/", 1)[-1].lower()
    suffix = next((s for s in LABEL_SUFFIXES if name.endswith(s)), None)
    if suffix is None:
        raise InvalidRequest(f"label file {name!r} is not .nii.gz, .nii, .nrrd or .seg.nrrd", field="label")
    return UploadedFile("label" + suffix, label_file.file.read())


def _decode_label(case_id: int, upload: UploadedFile) -> bytes:
    # Slicer saves a .seg.nrrd cropped to its segments' extent: it is placed onto the case's grid.
    if upload.filename.endswith(".seg.nrrd"):
        return cases.decode_slicer_segmentation(case_id, upload)
    return cases.decode_label(case_id, upload)


def _json_object(raw: str | bytes, field: str) -> dict[str, Any]:
    try:
        value = json.loads(raw) if raw else {}
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise InvalidRequest(f"{field} is not valid JSON", field=field) from exc
    if not isinstance(value, dict):
        raise InvalidRequest(f"{field} must be a JSON object", field=field)
    return value


def _check_label_info(params: dict[str, Any], project: Project) -> None:
    expected = service.label_names(project)
    items = params.get("label_info") or []
    if not isinstance(items, list) or not all(isinstance(i, dict) for i in items):
        raise InvalidRequest("label_info must be a list of {name, idx} objects", field="params")
    for item in items:
        name, idx = item.get("name"), item.get("idx")
        if not isinstance(idx, int | None):
            raise InvalidRequest(f"label_info idx {idx!r} is not a whole number", field="params")
        if name in expected and idx is not None and idx != expected[name]:
            raise InvalidLabelValues(f"label {name!r} has value {idx} in the client but {expected[name]} in the "
                                     "project", field="label")


@route("PUT", "/datastore/label")
def save_label(
    project_id: Id, session: SessionDep, store: StoreDep, user: UserDep,
    label: Annotated[UploadFile, File()], background: BackgroundTasks, image: str = Query(...),
    tag: str = Query(""), params: Annotated[str, Form()] = "{}",
) -> dict[str, Any]:
    """Submit a label: a new NextCase label version by the holder; completes the lease."""
    if tag not in ("", "final"):
        raise InvalidRequest(f"only final labels are stored; got tag {tag!r}", field="tag")
    case_id = service.resolve_case_id(project_id, user, image)
    data = _decode_label(case_id, _label_upload(label))  # before this request's transaction
    project = get_project(session, project_id)
    _check_label_info(_json_object(params, "params"), project)
    case = service.case_for(session, project, service.ImageRef(case_id, None))
    stored = cases.upload_label(session, store, case.id, data, user, before_save=queue.check_and_end_lease)
    if (effort_id := campaign.after_label_upload(session, stored)) is not None:
        background.add_task(campaign.compute_effort, effort_id)  # after commit and response, as in app.cases
    version = stored.version
    return {"image": image, "label": f"case{case.id}", "tag": "final", "version": version.version,
            "author": user.name}


def _volume_upload(file: UploadFile) -> UploadedFile:
    # The client sends its full local path, which may name the patient: only the suffix is kept.
    name = (file.filename or "").replace("\\", "/").rsplit("/", 1)[-1].lower()
    suffix = next((s for s in IMAGE_SUFFIXES if name.endswith(s)), None)
    if suffix is None:
        raise UnsupportedFormat("the uploaded file is not .nii.gz, .nii, .nrrd, .mha, a .zip of a DICOM series or "
                                "a .dcm file", field="file")
    return UploadedFile("upload" + suffix, file.file.read())


@route("PUT", "/datastore/")
def upload_image(
    project_id: Id, session: SessionDep, store: StoreDep, user: UserDep, file: Annotated[UploadFile, File()],
    image: str = Query("", max_length=1000), params: Annotated[str, Form()] = "{}",
) -> dict[str, Any]:
    """A volume opened locally in the client becomes a new case: the ingest of POST /api/v1/projects/{id}/cases.

    Admins always may; annotators when the project's annotators_can_upload_cases is set. ``image``
    (Slicer: the volume's node name) names the case for this user in later calls.
    """
    service.check_upload_allowed(project_id, user)  # before decoding: a refused upload costs nothing
    patient = _json_object(params, "params").get("patient")
    if patient is not None and (not isinstance(patient, str) or not patient.strip()):
        raise InvalidRequest("params.patient must be a non-empty string (a pseudonymous patient id)", field="params")
    volume = cases.decode_case([_volume_upload(file)])  # before this request's transaction
    project = get_project(session, project_id)
    case, created = service.add_uploaded_case(session, store, project, user, volume, image, patient)
    return {"image": service.image_id(case.id), "created": created}


@route("PUT", "/session/", responses=problem_responses(406))
def create_session(project_id: Id, _: UserDep) -> None:
    raise service.SessionsNotOffered(
        "NextCase offers no sessions: Slicer opens one only for interactive models (deepgrow, scribbles), which "
        "NextCase does not list. A volume opened locally is uploaded with PUT /datastore/ instead, which Slicer "
        "does before it segments or saves it")


@route("GET", "/session/{session_id}")
def get_session(project_id: Id, session_id: str, _: UserDep) -> None:
    raise NotFound(f"no session {session_id[:40]!r}: NextCase offers no sessions", field="session_id")


@route("GET", "/datastore/")
def datastore(project_id: Id, session: SessionDep, user: UserDep, output: str = Query("")) -> dict[str, Any]:
    """Lean: the caller's leased cases under the ids they were given, each with its label names."""
    project = get_project(session, project_id)
    names = service.label_names(project)
    objects = {
        service.image_id(case.id, lease.token): {
            "image": {"ext": ".nii.gz", "info": {}},
            "labels": {"original": {"ext": ".nii.gz", "info": {"params": {"label_names": names}}}},
        }
        for lease, case in queue.live_leases(session, project.id, user.id)
    }
    return {"name": project.name, "description": "NextCase datastore (your leased cases)", "images_dir": "",
            "labels_dir": "", "objects": objects}


@route("GET", "/datastore/label")
def datastore_label(
    project_id: Id, session: SessionDep, store: StoreDep, user: UserDep, label: str = Query(...),
    tag: str = Query("final"),
) -> Response:
    """Latest label version; with tag=original and no label yet, the current model's prediction."""
    project = get_project(session, project_id)
    case = service.resolve(session, project, user, label)
    queue.touch(session, case, user)
    try:
        _, data = cases.label_bytes(session, store, case, None)
    except NotFound:
        if tag != "original":
            raise
        data = _nifti_on_grid(service.prediction_array(session, store, case, project), case)
    return Response(data, media_type="application/gzip",
                    headers={"Content-Disposition": f'attachment; filename="case{case.id}_{tag}.nii.gz"'})


def _nifti_on_grid(array: np.ndarray, case: Case) -> bytes:
    from worker.data import encode_on_case_grid

    return encode_on_case_grid(array.astype(np.uint8), case)


# --- inference ---------------------------------------------------------------------------------


def _nrrd(array: np.ndarray, case: Case) -> bytes:
    image = read_nifti(_nifti_on_grid(array, case))
    with tempfile.TemporaryDirectory(prefix="nextcase-") as tmp:
        path = Path(tmp) / "mask.nrrd"
        sitk.WriteImage(image, str(path), useCompression=False)
        return path.read_bytes()


def _multipart(params: dict[str, Any], filename: str, data: bytes) -> Response:
    boundary = f"nextcase-{secrets.token_hex(12)}"
    body = b"".join([
        f"--{boundary}\r\nContent-Disposition: form-data; name=\"params\"\r\n\r\n".encode(),
        json.dumps(params).encode(), b"\r\n",
        f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"{filename}\"\r\n"
        "Content-Type: application/octet-stream\r\n\r\n".encode(),
        data, f"\r\n--{boundary}--\r\n".encode(),
    ])
    return Response(body, media_type=f"multipart/form-data; boundary={boundary}")


@router.post("/infer/{model}")
def infer(
    project_id: Id, model: str, session: SessionDep, store: StoreDep, user: UserDep, image: str = Query(...),
    output: str = Query(""),
) -> Response:
    """The current model's label map on the served image's grid, as uint8 NRRD."""
    project = get_project(session, project_id)
    case = service.resolve(session, project, user, image)
    queue.touch(session, case, user)
    mask = _nrrd(service.prediction_array(session, store, case, project), case)
    if output == "image":  # OHIF reads a raw body
        return Response(mask, media_type="application/octet-stream")
    params = {"label_names": service.label_names(project), "model": service.MODEL_NAME, "image": image}
    return _multipart(params, f"case{case.id}_seg.nrrd", mask)


# --- training ----------------------------------------------------------------------------------


def _cycle_request(config: dict[str, Any]) -> CycleCreate:
    known = set(CycleCreate.model_fields)
    try:
        return CycleCreate(**{k: v for k, v in config.items() if k in known})
    except ValidationError as exc:
        first = exc.errors()[0]
        field = ".".join(str(p) for p in first["loc"]) or "params"
        raise InvalidRequest(f"{field}: {first['msg']}", field=field) from exc


def _start_training(session: Session, project_id: int, user: User, config: dict[str, Any]) -> dict[str, Any]:
    auth.require_role(user, "admin")
    project = get_project(session, project_id)
    if service.active_cycle(session, project.id) is not None:
        raise service.TooManyRequests("a training cycle is already running for this project")
    return service.task_json(cycles.start(session, project, _cycle_request(config), user))


async def _json_body(request: Request) -> dict[str, Any]:
    return _json_object(await request.body(), "body")


@router.post("/train/{model}")
def train_model(
    project_id: Id, model: str, session: SessionDep, user: UserDep,
    body: Annotated[dict[str, Any], Depends(_json_body)],
) -> dict[str, Any]:
    return _start_training(session, project_id, user, body)


@route("POST", "/train/")
def train_all(
    project_id: Id, session: SessionDep, user: UserDep, body: Annotated[dict[str, Any], Depends(_json_body)],
) -> dict[str, Any]:
    config = body.get(service.MODEL_NAME) or next((v for v in body.values() if isinstance(v, dict)), {})
    return {service.MODEL_NAME: {"result": _start_training(session, project_id, user, config), "detail": ""}}


@route("GET", "/train/")
def train_status(
    project_id: Id, session: SessionDep, _: UserDep, check_if_running: bool = Query(False)
) -> Any:
    get_project(session, project_id)
    if check_if_running:
        active = service.active_cycle(session, project_id)
        if active is None:
            return JSONResponse({"detail": "no training running"}, status_code=404)
        return service.task_json(active)
    cycle = service.latest_cycle(session, project_id)
    if cycle is None:
        return JSONResponse({"detail": "no training has run"}, status_code=404)
    return service.task_json(cycle)


@route("DELETE", "/train/")
def train_stop(project_id: Id, session: SessionDep, user: UserDep) -> Any:
    auth.require_role(user, "admin")
    active = service.active_cycle(session, project_id)
    if active is None:
        return None
    return service.task_json(cycles.cancel(session, active, user))

