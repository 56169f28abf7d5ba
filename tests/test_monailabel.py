"""3D Slicer's MONAI Label client (monailabel 0.8.5, installed with --no-deps) against NextCase.

The client is the real one Slicer embeds; it talks plain http.client to a live NextCase server.
"""

from __future__ import annotations

import hashlib
import http.client
import re
import threading
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import quote_plus, urlparse

import httpx
import numpy as np
import pytest
import SimpleITK as sitk
from sqlalchemy import select

from app.cases.imaging import read_nifti
from app.core import db
from app.models import AuditEvent, LabelVersion, Lease, User
from tests.conftest import Login, make_login
from tests.factories import encode
from tests.ml.synthetic import cube_case
from tests.test_cycles import TINY, _image
from worker import pipeline

client_module = pytest.importorskip("monailabel.client.client", reason="pip install --no-deps monailabel==0.8.5")
MONAILabelClient = client_module.MONAILabelClient
MONAILabelClientException = client_module.MONAILabelClientException
STRATEGY = "nextcase"  # the one strategy /info/ lists: Slicer sends the first one listed


@pytest.fixture
def project(live_server: str, admin: Login, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """6 cube cases (2 labelled), one finished cycle (so a model and predictions exist); enqueue recorded."""
    from tests.factories import encode

    http = httpx.Client(base_url=f"{live_server}/api/v1", headers=admin.headers)
    project = http.post("/projects", json={"name": "slicer", "modality": "CT", "labels": ["background", "cube"]}).json()
    ids = []
    for seed in range(6):
        image, label = cube_case(seed)
        r = http.post(f"/projects/{project['id']}/cases", files={"file": ("c.nii.gz", encode(_image(image)))},
                      data={"patient": f"p{seed}"})
        ids.append(r.json()["id"])
        if seed < 2:
            http.put(f"/cases/{r.json()['id']}/label", files={"file": ("l.nii.gz", encode(_image(label)))})
    sent: list[int] = []
    monkeypatch.setattr("app.cycles.service.enqueue", sent.append)
    cycle = http.post(f"/projects/{project['id']}/cycles", json=TINY).json()
    pipeline.run_cycle(cycle["id"])
    label_path = tmp_path / "C:\\Users\\annotator\\label.nii.gz"  # a Windows path: the client sends it whole
    label_path.write_bytes(encode(_image(cube_case(9)[1])))
    return {**project, "case_ids": ids, "unlabelled": ids[2:], "label_path": str(label_path),
            "base": f"{live_server}/monailabel/{project['id']}", "enqueued": sent}


@pytest.fixture
def fresh(live_server: str, admin: Login) -> dict[str, Any]:
    """A project with 3 unlabelled cube cases and no cycle yet (so no model): fast to build."""
    http = httpx.Client(base_url=f"{live_server}/api/v1", headers=admin.headers)
    project = http.post("/projects", json={"name": "fresh", "modality": "CT", "labels": ["background", "cube"]}).json()
    ids = [http.post(f"/projects/{project['id']}/cases", files={"file": ("c.nii.gz", encode(_image(cube_case(s)[0])))},
                     data={"patient": f"p{s}"}).json()["id"] for s in range(3)]
    return {**project, "case_ids": ids, "base": f"{live_server}/monailabel/{project['id']}", "api": http,
            "api_url": f"{live_server}/api/v1"}


def case_of(sample: dict[str, Any]) -> int:
    return int(sample["id"][4:].split("-")[0])


def status_of(exc: pytest.ExceptionInfo[Any]) -> int:
    """The HTTP status a client exception carries (some client calls only put it in the message)."""
    found = re.search(r"Status: (\d+)", exc.value.msg)
    return int(found.group(1)) if found else int(exc.value.status_code)


def logged_in(base: str, login: Login) -> Any:
    client = MONAILabelClient(base, client_id="user-xyz")  # Slicer's default id: never an identity
    assert client.auth_enabled()
    client.update_auth(client.auth_token(login.name, login.token))
    assert client.auth_valid_token()
    return client


def test_whole_slicer_session(project: dict[str, Any], admin: Login, annotator: Login, tmp_path: Path) -> None:
    client = logged_in(project["base"], annotator)
    info = client.info()
    assert info["labels"] == ["cube"] and info["models"]["segmentation"]["labels"] == {"cube": 1}
    assert info["datastore"] == {"total": 6, "completed": 2, "label_tags": {"final": 2}}
    assert isinstance(info["train_stats"]["segmentation"]["best_metric"], float)
    assert list(info["strategies"]) == [STRATEGY]

    sample = client.next_sample(STRATEGY, {})
    assert sample["id"].startswith("case") and sample["name"] == f"{sample['id']}.nii.gz"
    case_id = int(sample["id"][4:].split("-")[0])
    assert case_id in project["unlabelled"]

    # Slicer downloads the image with urllib and no token: the lease-scoped id is the credential.
    url = f"{project['base']}/datastore/image?image={quote_plus(sample['id'])}"
    data = urllib.request.urlopen(url).read()
    assert sample["checksum"] == "SHA256:" + hashlib.sha256(data).hexdigest()
    image_path = tmp_path / sample["name"]
    image_path.write_bytes(data)
    image = sitk.ReadImage(str(image_path))

    mask_path, params = client.infer("segmentation", sample["id"], {"result_extension": ".nrrd",
                                                                    "result_dtype": "uint8"})
    assert params["label_names"] == {"cube": 1}
    mask = sitk.ReadImage(mask_path)
    assert mask_path.endswith(".nrrd") and mask.GetPixelID() == sitk.sitkUInt8
    assert mask.GetSize() == image.GetSize()
    assert mask.GetSpacing() == pytest.approx(image.GetSpacing())
    assert mask.GetOrigin() == pytest.approx(image.GetOrigin())
    assert set(np.unique(sitk.GetArrayFromImage(mask))) <= {0, 1}

    store = client.datastore()
    assert store["objects"][sample["id"]]["labels"]["original"]["info"]["params"]["label_names"] == {"cube": 1}
    original = client.download_label(sample["id"], "original")
    assert sitk.ReadImage(original).GetSize() == image.GetSize()

    saved = client.save_label(sample["id"], project["label_path"], params={"label_info": [{"name": "cube", "idx": 1}]})
    assert (saved["version"], saved["author"]) == (1, annotator.name)
    with db.session_scope() as session:
        authors = session.execute(select(User.name).join(LabelVersion, LabelVersion.author_id == User.id)
                                  .where(LabelVersion.case_id == case_id)).scalars().all()
    assert authors == [annotator.name]
    with pytest.raises(urllib.error.HTTPError) as gone:  # the lease ended: the capability id is dead
        urllib.request.urlopen(url)
    assert gone.value.code == 401

    admin_client = logged_in(project["base"], admin)
    task = admin_client.train_start("segmentation", {"epochs": 1, "client_id": "user-xyz"})
    assert task["status"] == "RUNNING" and task["details"]
    assert project["enqueued"][-1] == int(task["id"])
    assert admin_client.train_status(check_if_running=True) is True
    assert admin_client.train_status()["status"] == "RUNNING"
    with pytest.raises(MONAILabelClientException) as busy:
        admin_client.train_start("segmentation", {})
    assert status_of(busy) == 429
    stopped = admin_client.train_stop()
    assert stopped["status"] == "STOPPED" and stopped["details"][-1]
    assert admin_client.train_status(check_if_running=True) is False
    assert admin_client.train_stop() is None


def test_without_credentials_only_auth_answers(project: dict[str, Any]) -> None:
    client = MONAILabelClient(project["base"])
    assert client.auth_enabled()
    calls: list[Callable[[], Any]] = [
        client.info, lambda: client.next_sample(STRATEGY, {}), client.datastore,
        lambda: client.train_start("segmentation", {}), client.train_stop, client.train_status,
        lambda: client.infer("segmentation", f"case{project['unlabelled'][0]}", {}),
        lambda: client.download_label(f"case{project['unlabelled'][0]}", "original"),
        lambda: client.save_label(f"case{project['unlabelled'][0]}", project["label_path"]),
    ]
    for call in calls:
        with pytest.raises(MONAILabelClientException) as refused:
            call()
        assert status_of(refused) == 401
    assert client.train_status(check_if_running=True) is False
    with pytest.raises(urllib.error.HTTPError) as anonymous:
        urllib.request.urlopen(f"{project['base']}/datastore/image?image=case{project['unlabelled'][0]}")
    assert anonymous.value.code == 401
    with pytest.raises(MONAILabelClientException):
        client.auth_token("bob-annotator", "nc_wrong")


def test_two_users_drain_without_overlap_and_third_cannot_save(
    project: dict[str, Any], annotator: Login
) -> None:
    carol = make_login("carol", "annotator")
    got: dict[str, list[int]] = {annotator.name: [], carol.name: []}

    def drain(login: Login) -> None:
        client = logged_in(project["base"], login)
        while sample := client.next_sample(STRATEGY, {}):
            got[login.name].append(int(sample["id"][4:].split("-")[0]))
            client.save_label(sample["id"], project["label_path"])

    threads = [threading.Thread(target=drain, args=(login,)) for login in (annotator, carol)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    handed = got[annotator.name] + got[carol.name]
    assert sorted(handed) == project["unlabelled"]  # each case once, none twice, none lost


def test_foreign_lease_save_is_refused(project: dict[str, Any], annotator: Login) -> None:
    holder = logged_in(project["base"], annotator)
    sample = holder.next_sample(STRATEGY, {})
    intruder = logged_in(project["base"], make_login("dave", "annotator"))
    with pytest.raises(MONAILabelClientException) as refused:
        intruder.save_label(sample["id"], project["label_path"])
    assert status_of(refused) == 409


def test_next_sample_releases_and_never_repeats(project: dict[str, Any], annotator: Login) -> None:
    client = logged_in(project["base"], annotator)
    first = client.next_sample(STRATEGY, {})
    second = client.next_sample(STRATEGY, {})
    assert first["id"].split("-")[0] != second["id"].split("-")[0]
    seen = [first["id"].split("-")[0], second["id"].split("-")[0]]
    while sample := client.next_sample(STRATEGY, {}):
        assert sample["id"].split("-")[0] != seen[-1]
        seen.append(sample["id"].split("-")[0])
        if len(seen) > 12:
            break
    other = logged_in(project["base"], make_login("erin", "annotator"))
    assert other.next_sample(STRATEGY, {})  # skipped cases stay available to others


def test_empty_queue_is_200_empty_object(project: dict[str, Any], admin: Login) -> None:
    client = logged_in(project["base"], admin)
    while sample := client.next_sample(STRATEGY, {}):
        client.save_label(sample["id"], project["label_path"])
    assert client.next_sample(STRATEGY, {}) == {}


def test_paths_answer_200_with_and_without_slash_never_redirect(project: dict[str, Any], admin: Login) -> None:
    for path in ("/info/", "/info", "/train/", "/train", "/datastore/?output=all", "/datastore?output=all",
                 "/auth/", "/auth", "/auth/token/valid", "/auth/token/valid/"):
        r = httpx.get(project["base"] + path, headers=admin.headers, follow_redirects=False)
        assert r.status_code == 200, (path, r.status_code, r.text)


def test_stale_content_length_on_get_does_not_hang(project: dict[str, Any], admin: Login) -> None:
    parsed = urlparse(project["base"])
    conn = http.client.HTTPConnection(parsed.hostname, parsed.port, timeout=10)
    conn.request("GET", parsed.path + "/info/", headers={**admin.headers, "content-type": "application/json",
                                                         "content-length": "57"})
    response = conn.getresponse()
    assert response.status == 200 and b'"labels"' in response.read()


def test_ohif_style_train_start_and_raw_infer(project: dict[str, Any], admin: Login) -> None:
    http = httpx.Client(base_url=project["base"], headers=admin.headers)
    r = http.post("/train/", json={"segmentation": {"epochs": 1}})
    assert r.status_code == 200 and r.json()["segmentation"]["result"]["status"] == "RUNNING"
    assert http.get("/train/", params={"check_if_running": "true"}).json()["status"] == "RUNNING"
    assert http.delete("/train/").json()["status"] == "STOPPED"
    raw = http.post("/infer/segmentation", params={"image": f"case{project['unlabelled'][0]}", "output": "image"})
    assert raw.status_code == 200 and raw.content.startswith(b"NRRD")


def test_train_details_and_metric_types(project: dict[str, Any], admin: Login) -> None:
    client = logged_in(project["base"], admin)
    last = client.train_status()
    assert last["status"] == "DONE" and last["details"] and isinstance(last["details"], list)
    best = client.info()["train_stats"]["segmentation"]["best_metric"]
    assert isinstance(best, float)
    assert "total_time" in client.info()["train_stats"]["segmentation"]


def test_malformed_client_input_is_422_not_500(project: dict[str, Any], admin: Login) -> None:
    http = httpx.Client(base_url=project["base"], headers=admin.headers)
    r = http.post("/train/segmentation", content=b"{not json", headers={"content-type": "application/json"})
    assert r.status_code == 422 and r.json()["detail"] == "body is not valid JSON"
    r = http.post("/train/segmentation", json={"epochs": 0})
    assert r.status_code == 422 and r.json()["field"] == "epochs"
    sample = logged_in(project["base"], admin).next_sample(STRATEGY, {})
    with open(project["label_path"], "rb") as fh:
        mask = fh.read()
    r = http.put("/datastore/label", params={"image": sample["id"]}, data={"params": "[1, 2]"},
                 files={"label": ("m.nii.gz", mask)})
    assert r.status_code == 422 and r.json()["detail"] == "params must be a JSON object"
    bad_info = '{"label_info": [{"name": "cube", "idx": "one"}]}'
    r = http.put("/datastore/label", params={"image": sample["id"]}, data={"params": bad_info},
                 files={"label": ("m.nii.gz", mask)})
    assert r.status_code == 422 and r.json()["field"] == "params"


def test_no_model_is_advertised_before_the_first_one(fresh: dict[str, Any], annotator: Login) -> None:
    """Slicer auto-segments each new sample with every listed segmentation model: none may be listed yet."""
    client = logged_in(fresh["base"], annotator)
    info = client.info()
    assert info["models"] == {}
    assert info["labels"] == ["cube"] and info["trainers"]  # labelling and training still work
    sample = client.next_sample(STRATEGY, {})
    with pytest.raises(MONAILabelClientException) as no_model:  # asked anyway: a clear 404, not a crash
        client.infer("segmentation", sample["id"], {})
    assert status_of(no_model) == 404 and "no trained model yet" in no_model.value.msg

def test_strategies_list_what_the_queue_really_does(project: dict[str, Any], fresh: dict[str, Any],
                                                    annotator: Login) -> None:
    trained = logged_in(project["base"], annotator).info()["strategies"]
    assert list(trained) == [STRATEGY]
    assert "model version 1" in trained[STRATEGY]["description"]
    assert "mc_dropout_variance" in trained[STRATEGY]["description"]
    cold = logged_in(fresh["base"], annotator)
    description = cold.info()["strategies"][STRATEGY]["description"]
    assert "no model yet" in description and "random" in description and "skipped" in description
    for unknown in ("random", "uncertainty", "bald"):  # every name once gave the same queue
        with pytest.raises(MONAILabelClientException) as refused:
            cold.next_sample(unknown, {})
        assert status_of(refused) == 404 and "'nextcase'" in refused.value.msg
    assert cold.next_sample(STRATEGY, {})["id"]


def test_next_sample_after_skipping_every_case_is_stable(fresh: dict[str, Any], annotator: Login) -> None:
    """Once all are skipped, Next Sample goes round them, least recently skipped first; never "none left"."""
    client = logged_in(fresh["base"], annotator)
    samples = [client.next_sample(STRATEGY, {}) for _ in range(8)]
    assert all(sample.get("id") for sample in samples)
    cases = [case_of(sample) for sample in samples]
    assert sorted(cases[:3]) == fresh["case_ids"]
    assert cases[3:] == cases[:3] + cases[:2]
    assert len({sample["id"] for sample in samples}) == 8  # a new lease each time: an id Slicer has not loaded


def test_next_sample_with_one_case_left_hands_it_back_each_time(fresh: dict[str, Any], admin: Login,
                                                                annotator: Login) -> None:
    for seed, case_id in enumerate(fresh["case_ids"][:2]):
        mask = encode(_image(cube_case(seed)[1]))
        assert fresh["api"].put(f"/cases/{case_id}/label", files={"file": ("l.nii.gz", mask)}).status_code == 201
    client = logged_in(fresh["base"], annotator)
    samples = [client.next_sample(STRATEGY, {}) for _ in range(4)]
    assert [case_of(sample) for sample in samples] == [fresh["case_ids"][2]] * 4
    assert len({sample["id"] for sample in samples}) == 4


def test_train_progress_follows_the_phases_and_reaches_100_only_when_done(
    fresh: dict[str, Any], admin: Login, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Slicer's bar is epoch / total_epochs; it showed 100 % from the end of training while scoring ran on."""
    from app.models import Cycle

    monkeypatch.setattr("app.cycles.service.enqueue", lambda cycle_id: None)
    client = logged_in(fresh["base"], admin)
    cycle_id = int(client.train_start("segmentation", {"steps": 40})["id"])
    states = [("running", "train", {"step": 20, "steps": 40}), ("running", "train", {"step": 40, "steps": 40}),
              ("running", "evaluate", {}), ("running", "score", {"scored": 1, "total": 4}),
              ("running", "score", {"scored": 4, "total": 4}), ("running", "publish", {}), ("done", "publish", {})]
    shown, details = [], []
    for status, phase, progress in states:
        with db.session_scope() as session:
            cycle = session.get(Cycle, cycle_id)
            assert cycle is not None
            cycle.status, cycle.phase, cycle.progress = status, phase, {**cycle.progress, **progress}
            cycle.started_at = cycle.created_at
            if status == "done":
                cycle.finished_at = cycle.created_at
        stats = client.info()["train_stats"]["segmentation"]
        shown.append(100 * stats["epoch"] / stats["total_epochs"])
        details.append(client.train_status()["details"][0])
    assert shown == sorted(shown) and shown[0] < shown[1] < shown[3] < shown[4]  # rises through the phases
    assert max(shown[:-1]) < 100 == shown[-1]  # 100 % only once the cycle is done
    assert "training: step 20 of 40" in details[0] and "scoring: 1 of 4 cases" in details[3]
    assert "publishing" in details[5] and details[6] == f"cycle {cycle_id}: done"


def test_slicer_seg_nrrd_cropped_to_its_extent_is_placed_on_the_full_grid(
    fresh: dict[str, Any], annotator: Login, tmp_path: Path
) -> None:
    from app.cases.imaging import Geometry
    from tests.test_slicer_segmentation import seg_nrrd

    grid = Geometry(shape=(16, 16, 16), spacing=(1.0, 1.0, 1.0), origin=(0.0, 0.0, 0.0),
                    direction=(1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0))
    client = logged_in(fresh["base"], annotator)
    sample = client.next_sample(STRATEGY, {})
    layers = np.zeros((2, 3, 4, 2), dtype=np.uint8)
    layers[0, 0, 0, :] = 1  # one voxel in both segments
    overlapping = tmp_path / "overlap.seg.nrrd"
    overlapping.write_bytes(seg_nrrd(layers, (5, 6, 7), (("cube", 1, 0), ("other", 1, 1)), case=grid))
    with pytest.raises(MONAILabelClientException) as refused:
        client.save_label(sample["id"], str(overlapping))
    assert status_of(refused) == 422 and "overlapping segments" in refused.value.msg
    assert "Overwrite all" in refused.value.msg

    crop = np.zeros((2, 3, 4), dtype=np.uint8)  # z, y, x
    crop[1, 2, 3] = crop[0, 0, 0] = 1
    cropped = tmp_path / "C:\\Users\\annotator\\Segmentation.seg.nrrd"
    cropped.write_bytes(seg_nrrd(crop, (5, 6, 7), (("cube", 1, 0),), case=grid))
    saved = client.save_label(sample["id"], str(cropped), params={"label_info": [{"name": "cube", "idx": 1}]})
    assert saved["version"] == 1  # the refused upload stored nothing
    stored = fresh["api"].get(f"/cases/{case_of(sample)}/label")
    mask = sitk.GetArrayFromImage(read_nifti(stored.content))
    assert mask.shape == (16, 16, 16) and np.count_nonzero(mask) == 2
    assert mask[7, 6, 5] == mask[8, 8, 8] == 1


def _volume_file(tmp_path: Path, seed: int, name: str = "local.nii.gz") -> str:
    path = tmp_path / name
    path.write_bytes(encode(_image(cube_case(seed)[0])))
    return str(path)


def test_a_volume_opened_locally_in_slicer_becomes_a_new_case(
    fresh: dict[str, Any], admin: Login, tmp_path: Path
) -> None:
    """Slicer uploads a local volume under its node name, then segments and saves under that same name."""
    from app.models import ImageAlias

    client = logged_in(fresh["base"], admin)
    node = "DOE^JANE CT 3"  # a node name may carry what the file was called: it must not be stored
    reply = client.upload_image(_volume_file(tmp_path, 7), node)
    case_id = int(reply["image"][4:])
    assert reply == {"image": f"case{case_id}", "created": True} and case_id not in fresh["case_ids"]
    case = fresh["api"].get(f"/cases/{case_id}").json()
    assert case["patient"].startswith("PT-") and case["status"] == "unlabelled"
    with db.session_scope() as session:  # the uploader's lease is its own arm, not a queue draw
        assert session.scalar(select(Lease.arm).where(Lease.case_id == case_id)) == "uploaded"

    label = tmp_path / "label.nii.gz"
    label.write_bytes(encode(_image(cube_case(7)[1])))
    saved = client.save_label(node, str(label), params={"label_info": [{"name": "cube", "idx": 1}]})
    assert (saved["label"], saved["version"]) == (f"case{case_id}", 1)
    again = client.upload_image(_volume_file(tmp_path, 7), node)  # Slicer re-uploads: the same case, no copy
    assert again == {"image": f"case{case_id}", "created": False}
    assert len(fresh["api"].get(f"/projects/{fresh['id']}/cases").json()["items"]) == 4
    with db.session_scope() as session:
        stored = [str(row) for row in session.execute(select(AuditEvent.detail))]
        stored += [str(row) for row in session.execute(select(ImageAlias.__table__))]
    assert stored and not any("DOE" in row for row in stored)


def test_annotators_upload_only_when_the_project_allows_it(
    fresh: dict[str, Any], admin: Login, annotator: Login, tmp_path: Path, settings_env: Path
) -> None:
    from tests.factories import snapshot

    client = logged_in(fresh["base"], annotator)
    before = snapshot(settings_env)
    with pytest.raises(MONAILabelClientException) as refused:
        client.upload_image(_volume_file(tmp_path, 8), "MRHead")
    assert status_of(refused) == 403 and "annotators_can_upload_cases" in refused.value.msg
    assert snapshot(settings_env) == before

    setting = {"annotators_can_upload_cases": True}
    r = httpx.patch(f"{fresh['api_url']}/projects/{fresh['id']}", json=setting, headers=annotator.headers)
    assert r.status_code == 403
    r = fresh["api"].patch(f"/projects/{fresh['id']}", json=setting)
    assert r.status_code == 200 and r.json()["annotators_can_upload_cases"] is True
    assert fresh["api"].get(f"/projects/{fresh['id']}").json()["annotators_can_upload_cases"] is True

    broken = tmp_path / "broken.nii.gz"
    broken.write_bytes(b"\x1f\x8b not a volume")
    with pytest.raises(MONAILabelClientException) as bad:  # the same ingest checks as the REST upload
        client.upload_image(str(broken), "MRHead")
    assert status_of(bad) == 400 and snapshot(settings_env) == before
    case_id = int(client.upload_image(_volume_file(tmp_path, 8), "MRHead")["image"][4:])
    sample = client.datastore()["objects"]  # the uploader holds the lease: no one else is handed the case
    assert [int(image_id[4:].split("-")[0]) for image_id in sample] == [case_id]
    other = logged_in(fresh["base"], make_login("carol", "annotator"))
    with pytest.raises(MONAILabelClientException) as foreign:  # a node name means something to its user only
        other.save_label("MRHead", _volume_file(tmp_path, 8, "l.nii.gz"))
    assert status_of(foreign) == 404


def test_sessions_are_refused_with_what_to_do_instead(fresh: dict[str, Any], admin: Login, tmp_path: Path) -> None:
    """Slicer opens a session only for interactive models, which NextCase does not list."""
    client = logged_in(fresh["base"], admin)
    with pytest.raises(MONAILabelClientException) as refused:
        client.create_session(_volume_file(tmp_path, 7))
    assert status_of(refused) == 406 and "PUT /datastore/" in str(refused.value.response)
    with pytest.raises(MONAILabelClientException) as missing:
        client.get_session("anything")
    assert status_of(missing) == 404
