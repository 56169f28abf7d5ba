"""What a new team meets in its first hour: the key file, the CLI, logs, the demo's terminal, live leases."""

from __future__ import annotations

import logging
import os
import stat
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from app.auth import service as auth
from app.cli import _bootstrap_admin
from app.core import db, migrate
from app.core.config import DEV_SECRET, Settings, get_settings
from app.core.logging import HumanFormatter
from app.core.secret_key import MissingKeyFile, _source, describe, ensure_key, patient_key
from app.models import ApiToken, User
from app.phantom import write_dataset
from app.terminal import Announcer, CycleView, explain_dice, outcome_line, progress_line
from tests.conftest import Login, make_login
from tests.factories import bulk_cases, create_project, encode, volume

ROOT = Path(__file__).resolve().parents[1]


def _cli(*args: str, cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "app.cli", *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=300)


def _env(**values: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("NEXTCASE_")}
    env["PYTHONPATH"] = str(ROOT)
    env["COLUMNS"] = "200"  # rich wraps usage errors at the terminal width
    return {**env, **values}


# --- 1. the patient-id key ---------------------------------------------------------------------


def test_first_start_generates_a_private_random_key_and_reuses_it(tmp_path: Path) -> None:
    first = ensure_key(Settings(data_dir=tmp_path / "a"))
    assert first.created and first.path == tmp_path / "a" / "secret.key"
    assert stat.S_IMODE(first.path.stat().st_mode) == 0o600
    assert first.key != DEV_SECRET.encode() and len(first.key) == 64
    again = ensure_key(Settings(data_dir=tmp_path / "a"))
    assert again.key == first.key and not again.created
    assert "generated a random key" in describe(first) and first.key.decode() not in describe(first)
    other = ensure_key(Settings(data_dir=tmp_path / "b"))
    assert other.key != first.key  # no two installations share a key


def test_a_database_with_patients_and_no_key_file_is_refused_not_rekeyed(tmp_path: Path) -> None:
    with pytest.raises(MissingKeyFile, match="restore the key file"):
        ensure_key(Settings(data_dir=tmp_path), has_patients=True)
    assert not (tmp_path / "secret.key").exists()  # nothing was generated in its place
    legacy = ensure_key(Settings(data_dir=tmp_path, secret_key=DEV_SECRET), has_patients=True)
    assert legacy.key == DEV_SECRET.encode() and legacy.legacy
    assert describe(legacy).startswith("WARNING")


def test_every_command_refuses_a_database_whose_key_file_is_missing(tmp_path: Path) -> None:
    dataset = write_dataset(tmp_path / "msd", n=1, seed=0, shape=(8, 16, 16))
    env = _env(NEXTCASE_DATA_DIR=str(tmp_path / "data"))
    assert _cli("import-msd", "phantoms", str(dataset), cwd=tmp_path, env=env).returncode == 0
    (tmp_path / "data" / "secret.key").unlink()  # lost, or a different NEXTCASE_DATA_DIR/HOME than before
    again = _cli("import-msd", "phantoms", str(dataset), cwd=tmp_path, env=env)
    assert again.returncode == 1 and again.stderr.startswith("error: the database holds patients but")
    assert not (tmp_path / "data" / "secret.key").exists()


def test_an_explicit_key_wins_and_production_requires_one(tmp_path: Path) -> None:
    assert patient_key(Settings(data_dir=tmp_path, secret_key="k" * 40)) == b"k" * 40
    assert not (tmp_path / "secret.key").exists()
    with pytest.raises(ValueError, match="NEXTCASE_SECRET_KEY must be set"):
        Settings(data_dir=tmp_path, environment="production")


def test_patients_keep_their_pseudonym_across_restarts(client: TestClient, admin: Login) -> None:
    project = create_project(client, admin.headers, "keyed")

    def upload(seed: int) -> Any:
        reply = client.post(f"/api/v1/projects/{project['id']}/cases", headers=admin.headers,
                            data={"patient": "HOSP-1"}, files={"file": ("a.nii.gz", encode(volume(seed=seed)))})
        assert reply.status_code == 201, reply.text
        return reply.json()["patient"]

    before = upload(1)
    get_settings.cache_clear()  # a restart: settings and the key are read again
    _source.cache_clear()
    assert upload(2) == before
    assert (get_settings().data_dir / "secret.key").exists()


# --- 5. import before the first start -------------------------------------------------------------


def test_import_before_first_start_migrates_and_leaves_the_admin_bootstrap(tmp_path: Path) -> None:
    dataset = write_dataset(tmp_path / "msd", n=2, seed=0, shape=(8, 16, 16))
    env = _env(NEXTCASE_DATA_DIR=str(tmp_path / "data"))
    done = _cli("import-msd", "phantoms", str(dataset), "--with-labels", cwd=tmp_path, env=env)
    assert done.returncode == 0, done.stderr
    assert "imported 2" in done.stdout and "Traceback" not in done.stderr
    url = f"sqlite:///{tmp_path / 'data' / 'nextcase.db'}"
    engine = db.make_engine(url)
    with engine.connect() as conn:
        users = conn.execute(select(User.name, User.role)).all()
    engine.dispose()
    assert users == [("importer", "system")]
    refused = _cli("create-token", "importer", cwd=tmp_path, env=env)
    assert refused.returncode == 1 and refused.stderr.strip() == (
        "error: 'importer' is a system user: it cannot log in or hold a token")


def test_system_users_do_not_count_as_admins_and_cannot_log_in(settings_env: Path) -> None:
    with db.session_scope() as session:
        system = auth.get_or_create_system_user(session, "importer")
        record_token = "nc_" + "x" * 43
        session.add(ApiToken(user_id=system.id, token_hash=auth.hash_token(record_token), prefix="nc_xxxxxxx"))
    token = _bootstrap_admin()
    assert token is not None
    with db.session_scope() as session:
        assert auth.authenticate(session, token).role == "admin"
        with pytest.raises(auth.Unauthorized, match="system users cannot log in"):
            auth.authenticate(session, record_token)
    assert _bootstrap_admin() is None  # an admin exists now


def test_migration_turns_the_old_importer_admin_into_a_system_user(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'old.db'}"
    migrate.upgrade(url, "0004")
    engine = db.make_engine(url)
    with engine.begin() as conn:
        conn.exec_driver_sql("INSERT INTO users (name, role, created_at, disabled) VALUES "
                             "('importer', 'admin', '2026-01-01', 0), ('boss', 'admin', '2026-01-01', 0)")
    migrate.upgrade(url)
    with engine.connect() as conn:
        assert dict(conn.execute(select(User.name, User.role)).all()) == {"importer": "system", "boss": "admin"}
    engine.dispose()


# --- 6. the CLI ------------------------------------------------------------------------------------


def test_cli_keeps_its_data_in_one_place_whatever_the_working_directory(tmp_path: Path) -> None:
    elsewhere = tmp_path / "somewhere"
    elsewhere.mkdir()
    env = _env(XDG_DATA_HOME=str(tmp_path / "xdg"))
    made = _cli("create-user", "alice", "--role", "admin", cwd=elsewhere, env=env)
    assert made.returncode == 0, made.stderr
    assert made.stdout.startswith("nc_")
    assert (tmp_path / "xdg" / "nextcase" / "nextcase.db").exists()
    assert list(elsewhere.iterdir()) == []  # no stray database in the working directory

    duplicate = _cli("create-user", "alice", "--role", "admin", cwd=tmp_path, env=env)
    assert duplicate.returncode == 1
    assert duplicate.stderr.strip() == "error: a user named 'alice' already exists"
    wrong = _cli("create-user", "bob", "--role", "boss", cwd=tmp_path, env=env)
    assert wrong.returncode == 2 and "'boss' is not one of 'admin', 'annotator'" in wrong.stderr
    assert "Traceback" not in duplicate.stderr + wrong.stderr


def test_cli_reports_bad_settings_and_unreachable_databases_in_one_line(tmp_path: Path) -> None:
    env = _env(NEXTCASE_DATA_DIR=str(tmp_path), NEXTCASE_LEASE_MINUTES="-1")
    bad = _cli("create-user", "x", cwd=tmp_path, env=env)
    assert bad.returncode == 1 and bad.stderr.count("\n") == 1
    assert bad.stderr.startswith("error: invalid settings: NEXTCASE_LEASE_MINUTES")
    env = _env(NEXTCASE_DATABASE_URL="postgresql+psycopg://nobody@127.0.0.1:1/none")
    down = _cli("create-user", "x", cwd=tmp_path, env=env)
    assert down.returncode == 1 and down.stderr.count("\n") == 1
    assert down.stderr.startswith("error: cannot use the database")


def test_version_and_help_answer_without_loading_the_service(tmp_path: Path) -> None:
    probe = ("import sys\nfrom app.cli import cli\ntry:\n    cli(['--help'])\nexcept SystemExit:\n    pass\n"
             "heavy = sorted(m for m in ('sqlalchemy', 'fastapi', 'torch', 'monai', 'celery', 'SimpleITK')"
             " if m in sys.modules)\nprint('HEAVY', heavy)\n")
    done = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert "Usage" in done.stdout and "HEAVY []" in done.stdout, done.stdout + done.stderr
    version = _cli("--version", cwd=tmp_path, env=_env())
    assert version.returncode == 0 and version.stdout.startswith("nextcase 0.")


def test_simulate_validates_its_choices(tmp_path: Path) -> None:
    done = _cli("simulate", str(tmp_path), "--strategies", "random,magic", cwd=tmp_path, env=_env())
    assert done.returncode == 2 and "unknown 'magic'" in done.stderr
    done = _cli("simulate", str(tmp_path), "--device", "tpu", cwd=tmp_path, env=_env())
    assert done.returncode == 2 and "'tpu' is not one of 'cpu', 'cuda'" in done.stderr


# --- 7. logs and the demo's terminal -----------------------------------------------------------------


def test_logs_are_json_for_machines_and_one_readable_line_on_a_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True)
    assert Settings().json_logs is False
    monkeypatch.setattr(sys.stderr, "isatty", lambda: False)
    assert Settings().json_logs is True
    assert Settings(log_json=False).json_logs is False
    record = logging.makeLogRecord({"name": "nextcase.http", "levelname": "INFO", "levelno": 20, "msg": "request",
                                    "method": "POST", "status": 201, "user_id": None, "data": {"args": [1]}})
    line = HumanFormatter().format(record)
    assert line.endswith("INFO  nextcase.http request method=POST status=201") and "{" not in line


def test_successful_reads_are_logged_at_debug_and_changes_at_info(
    client: TestClient, admin: Login, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="nextcase.http")
    client.get("/api/v1/projects", headers=admin.headers)
    create_project(client, admin.headers, "logged")
    client.get("/api/v1/projects/999", headers=admin.headers)
    levels = [(r.__dict__["method"], r.__dict__["status"], r.levelname) for r in caplog.records if r.msg == "request"]
    assert levels == [("GET", 200, "DEBUG"), ("POST", 201, "INFO"), ("GET", 404, "INFO")]


def _view(**values: Any) -> CycleView:
    base: dict[str, Any] = {"status": "running", "phase": "train", "progress": {}, "metrics": {}, "error": None,
                            "seconds": 75.0}
    return CycleView(**{**base, **values})


def test_cycle_progress_lines_say_the_phase_how_far_and_how_long() -> None:
    assert progress_line(1, _view(progress={"step": 50, "steps": 200})) == (
        "[cycle 1] training step 50/200 (25 %), 1 min 15 s so far")
    assert progress_line(1, _view(phase="score", progress={"scored": 3, "total": 12})).startswith(
        "[cycle 1] scoring case 3/12")
    assert "failed after 1 min 15 s: out of memory" in outcome_line(1, _view(status="failed", error="out of memory"))


def test_the_one_time_token_is_printed_exactly_once_even_if_the_server_never_answered(
    capsys: pytest.CaptureFixture[str],
) -> None:
    announcer = Announcer("http://[::]:1", "nc_secret", None)
    assert announcer.base == "http://127.0.0.1:1"  # a wildcard bind address is not something to dial
    announcer.stop()  # e.g. Ctrl-C before the server answered: serve's finally still tells
    announcer.tell_once()
    announcer.tell_once()
    assert capsys.readouterr().out.count("admin token (shown once): nc_secret") == 1


def test_dice_is_explained_where_it_is_shown() -> None:
    metrics = {"mean_dice": 0.4, "per_class": {"background": 0.99, "lungs": 0.9, "heart": 0.7, "cord": 0.0}}
    text = explain_dice(metrics)
    assert "lungs 0.90, heart 0.70, cord 0.00" in text and "background 0.99" not in text
    assert "leaves out the background" in text and "was not found yet" in text
    assert "not found" not in explain_dice({"mean_dice": 0.8, "per_class": {"background": 1.0, "lungs": 0.8}})


# --- 8. live leases ------------------------------------------------------------------------------------


def test_live_leases_list_the_callers_own_with_their_tokens(
    client: TestClient, admin: Login, annotator: Login, settings_env: Path
) -> None:
    project = create_project(client, admin.headers, "leases")
    bulk_cases(project["id"], 3, settings_env)
    other = make_login("other", "annotator")
    mine = client.post(f"/api/v1/projects/{project['id']}/queue/next", headers=annotator.headers).json()
    theirs = client.post(f"/api/v1/projects/{project['id']}/queue/next", headers=other.headers).json()
    released = client.post(f"/api/v1/projects/{project['id']}/queue/next", headers=other.headers).json()
    assert client.delete(f"/api/v1/leases/{released['lease']['token']}", headers=other.headers).status_code == 200

    listed = client.get("/api/v1/leases?mine=true", headers=annotator.headers)
    assert listed.status_code == 200
    assert [(x["case_id"], x["token"], x["project_id"]) for x in listed.json()] == [
        (mine["case"]["id"], mine["lease"]["token"], project["id"])]
    assert client.get("/api/v1/leases", headers=other.headers).json()[0]["token"] == theirs["lease"]["token"]
    assert client.get(f"/api/v1/leases?project_id={project['id'] + 1}", headers=other.headers).json() == []

    everyone = client.get("/api/v1/leases?mine=false", headers=admin.headers).json()
    assert {x["case_id"] for x in everyone} == {mine["case"]["id"], theirs["case"]["id"]}
    assert all(x["token"] is None for x in everyone)  # tokens are for their holders only
    refused = client.get("/api/v1/leases?mine=false", headers=annotator.headers)
    assert refused.status_code == 403 and "admin role" in refused.json()["detail"]


def test_the_embedded_queue_exists_before_the_worker_and_the_api_race_to_create_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import sqlite3

    from app.cli import _declare_task_queue
    from worker.celery_app import reset_celery

    monkeypatch.setenv("NEXTCASE_DATA_DIR", str(tmp_path))
    get_settings.cache_clear()
    reset_celery()
    try:
        _declare_task_queue()
        _declare_task_queue()  # idempotent: a restart declares it again
        with sqlite3.connect(tmp_path / "broker.sqlite") as conn:
            assert conn.execute("SELECT name FROM kombu_queue ORDER BY name").fetchall() == [("gpu",), ("interop",)]
    finally:
        get_settings.cache_clear()
        reset_celery()
