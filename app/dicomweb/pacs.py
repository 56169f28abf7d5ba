"""Talking to a DICOMweb endpoint (QIDO-RS, WADO-RS, STOW-RS) through ``dicomweb-client``.

Every failure becomes a :class:`PacsError` whose message names the problem (unreachable, credentials refused,
an HTTP status) and never carries credentials or response bodies (a PACS may echo header values).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from typing import Any, Protocol, TypeVar

import pydicom
import pydicom.datadict
import requests
from pydicom.dataset import Dataset

from app.core.errors import DomainError
from app.dicomweb.credentials import Credentials

TIMEOUT_S = 60
T = TypeVar("T")


class PacsError(DomainError):
    status, type, title = 502, "pacs-error", "The DICOMweb source failed"


class Pacs(Protocol):
    """What NextCase asks of a DICOMweb endpoint (dicomweb-client's DICOMwebClient, or a fake in tests)."""

    def search_for_series(self, study_instance_uid: str | None = None, *, search_filters: dict[str, Any] | None = None,
                          get_remaining: bool = False) -> list[dict[str, Any]]: ...

    def retrieve_series(self, study_instance_uid: str, series_instance_uid: str) -> list[Dataset]: ...

    def retrieve_series_metadata(self, study_instance_uid: str, series_instance_uid: str) -> list[dict[str, Any]]: ...

    def store_instances(self, datasets: list[Dataset]) -> Dataset: ...


def connect(base_url: str, credentials: Credentials | None) -> Pacs:
    from dicomweb_client.api import DICOMwebClient

    session = requests.Session()
    if credentials is not None and credentials.kind == "basic":
        session.auth = (credentials.username, credentials.secret)
    elif credentials is not None and credentials.kind == "bearer":
        session.headers["Authorization"] = f"Bearer {credentials.secret}"
    session.request = _with_timeout(session.request)  # type: ignore[method-assign]
    client = DICOMwebClient(base_url, session=session)
    # dicomweb-client retries failed requests with exponential back-off by default (about 30 s against a closed
    # port); a job reports the failure at once instead, and the admin starts it again.
    client.set_http_retry_params(retry=False)
    pacs: Pacs = client
    return pacs


def _with_timeout(request: Callable[..., requests.Response]) -> Callable[..., requests.Response]:
    def call(*args: Any, **kwargs: Any) -> requests.Response:
        kwargs.setdefault("timeout", TIMEOUT_S)
        return request(*args, **kwargs)

    return call


def call(what: str, base_url: str, fn: Callable[[], T]) -> T:
    """Run one DICOMweb request; translate what can go wrong into a PacsError naming it."""
    try:
        return fn()
    except requests.HTTPError as exc:
        code = exc.response.status_code if exc.response is not None else None
        if code in (401, 403):
            raise PacsError(f"the DICOMweb source at {base_url} refused the credentials (HTTP {code}) on {what}; "
                            "check the source's username/password or token") from None
        raise PacsError(f"the DICOMweb source at {base_url} answered HTTP {code} to {what}") from None
    except requests.Timeout:
        raise PacsError(f"the DICOMweb source at {base_url} did not answer {what} within {TIMEOUT_S} s") from None
    except requests.ConnectionError:
        raise PacsError(f"cannot reach the DICOMweb source at {base_url} ({what}): connection failed") from None
    except requests.RequestException as exc:
        raise PacsError(f"the DICOMweb request {what} to {base_url} failed ({type(exc).__name__})") from None


def qido_filters(query: dict[str, Any]) -> tuple[str | None, dict[str, Any]]:
    """The study UID to search within and the QIDO-RS filters of an import's query."""
    filters: dict[str, Any] = {}
    if query.get("series_instance_uid"):
        filters["SeriesInstanceUID"] = query["series_instance_uid"]
    if query.get("modality"):
        filters["Modality"] = query["modality"]
    start, end = query.get("study_date_from"), query.get("study_date_to")
    if start or end:
        filters["StudyDate"] = f"{_dicom_date(start)}-{_dicom_date(end)}"
    return query.get("study_instance_uid"), filters


def _dicom_date(value: str | None) -> str:
    return dt.date.fromisoformat(value).strftime("%Y%m%d") if value else ""


def series_of(hits: list[dict[str, Any]]) -> list[tuple[str, str]]:
    """(StudyInstanceUID, SeriesInstanceUID) of each QIDO series hit, each once, in the order found."""
    found: dict[str, str] = {}
    for hit in hits:
        ds = Dataset.from_json(hit)
        study, series = str(ds.get("StudyInstanceUID", "") or ""), str(ds.get("SeriesInstanceUID", "") or "")
        if study and series:
            found.setdefault(series, study)
    return [(study, series) for series, study in found.items()]


def patient_study(pacs: Pacs, base_url: str, study_uid: str, series_uid: str) -> Dataset | None:
    """The patient and study attributes of the source series, for a SEG stored back to that PACS (memory only)."""
    from app.dicomweb.seg import PATIENT_STUDY

    metadata = call("WADO-RS series metadata", base_url, lambda: pacs.retrieve_series_metadata(study_uid, series_uid))
    if not metadata:
        return None
    wanted = {pydicom.datadict.tag_for_keyword(k) for k in PATIENT_STUDY}
    first = Dataset.from_json({k: v for k, v in metadata[0].items() if int(k, 16) in wanted})  # no bulk data
    out = Dataset()
    for keyword in PATIENT_STUDY:
        if keyword in first:
            setattr(out, keyword, first.get(keyword))
    return out


def seg_bytes(seg: pydicom.Dataset) -> bytes:
    import io

    buffer = io.BytesIO()
    seg.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()
