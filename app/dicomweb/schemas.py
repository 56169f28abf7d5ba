from __future__ import annotations

import datetime as dt
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr

# No user:password@ in the URL (credentials go in their own fields, stored encrypted), no query or fragment.
BASE_URL = r"^https?://[A-Za-z0-9.\-]+(:[0-9]{1,5})?(/[A-Za-z0-9._~\-/%]*)?$"
UID = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[0-9]+(\.[0-9]+)*$",
                           description="a DICOM UID (digits and dots)")]
MODALITY = Annotated[str, Field(min_length=1, max_length=16, pattern=r"^[A-Z0-9_]+$",
                                description="DICOM Modality (0008,0060), e.g. CT or MR")]
JobStatus = Literal["queued", "running", "done", "failed"]


class BasicCredentials(BaseModel):
    model_config = ConfigDict(extra="forbid")
    type: Literal["basic"]
    username: str = Field(min_length=1, max_length=200)
    password: SecretStr = Field(min_length=1, max_length=1000)


class BearerCredentials(BaseModel):
    model_config = ConfigDict(extra="forbid")
    type: Literal["bearer"]
    token: SecretStr = Field(min_length=1, max_length=4000)


class SourceCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    base_url: str = Field(max_length=500, pattern=BASE_URL,
                          description="the DICOMweb root, e.g. https://pacs.example.org/dicom-web")
    credentials: Annotated[BasicCredentials | BearerCredentials, Field(discriminator="type")] | None = Field(
        None, description="stored encrypted; never returned by the API and never logged")


class SourcePublic(BaseModel):
    model_config = ConfigDict(from_attributes=True)
    id: int
    project_id: int
    base_url: str
    auth: Literal["none", "basic", "bearer"] = Field(description="which kind of credentials is stored (never them)")
    created_at: dt.datetime


class _ImportOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")
    source_id: int | None = Field(None, ge=1, le=2**31 - 1,
                                  description="the project's DICOMweb source; default: its newest")
    allow_modality_mismatch: bool = Field(False, description="import series whose Modality differs from the project's")


class ImportByStudy(_ImportOptions):
    study_instance_uid: UID


class ImportBySeries(_ImportOptions):
    series_instance_uid: UID
    study_instance_uid: UID | None = None


class ImportByFilter(_ImportOptions):
    """QIDO-RS filters: every series of this modality (in studies of the date range, when given)."""

    modality: MODALITY
    study_date_from: dt.date | None = None
    study_date_to: dt.date | None = None


ImportCreate = ImportBySeries | ImportByStudy | ImportByFilter


class SeriesResult(BaseModel):
    series_instance_uid: str
    status: Literal["imported", "already_present", "refused"]
    case_id: int | None = None
    reason: str | None = None


class ImportPublic(BaseModel):
    """An import's state; only admins see it (it names series UIDs)."""

    id: int
    project_id: int
    source_id: int
    query: dict[str, Any]
    status: JobStatus
    series_total: int | None
    series_done: int
    results: list[SeriesResult]
    error: str | None
    created_at: dt.datetime
    started_at: dt.datetime | None
    finished_at: dt.datetime | None


class SegExportPublic(BaseModel):
    model_config = ConfigDict(from_attributes=True)
    id: int
    case_id: int
    label_version_id: int
    source_id: int
    status: JobStatus
    sop_instance_uid: str | None
    series_instance_uid: str | None
    error: str | None
    created_at: dt.datetime
    finished_at: dt.datetime | None


class ExportCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    version: int | None = Field(None, ge=1, le=2**31 - 1, description="label version; default the latest")
    source_id: int | None = Field(None, ge=1, le=2**31 - 1,
                                  description="the project's DICOMweb source; default: its newest")


class DicomReferencesPublic(BaseModel):
    """A case's DICOM origin, for admins: identifiers and geometry only."""

    model_config = ConfigDict(from_attributes=True)
    case_id: int
    study_instance_uid: str
    series_instance_uid: str
    frame_of_reference_uid: str | None
    sop_class_uid: str
    instances: list[str]
    positions: list[list[float]]
