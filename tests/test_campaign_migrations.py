"""Migrations 0007-0008 on a database in use: upgrade keeps its rows and fills the new columns; downgrade undoes."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import create_engine, inspect, text

from app.core import migrate

NOW = dt.datetime(2026, 11, 1, 12)


def _seed_at_0005(url: str) -> None:
    engine = create_engine(url)
    with engine.begin() as conn:
        run = conn.execute
        run(text("INSERT INTO users (name, role, created_at, disabled) VALUES ('ann', 'annotator', :t, false)"),
            {"t": NOW})
        for name in ("one", "two"):
            run(text("INSERT INTO projects (name, modality, labels, created_at) VALUES (:n, 'CT', :l, :t)"),
                {"n": name, "l": '["background", "organ"]', "t": NOW})
        run(text("INSERT INTO patients (project_id, pseudonym, external_id_hash, created_at) "
                 "VALUES (1, 'PT-1', :h, :t)"), {"h": "0" * 64, "t": NOW})
        run(text("INSERT INTO cases (project_id, patient_id, sha256, blob_key, shape, spacing, origin, direction, "
                 "dtype, source_format, status, split, created_at, pinned, excluded) VALUES (1, 1, :s, 'k', "
                 "'[1, 1, 1]', '[1, 1, 1]', '[0, 0, 0]', '[1, 0, 0, 0, 1, 0, 0, 0, 1]', 'int16', 'nifti', "
                 "'unlabelled', 'pool', :t, false, false)"), {"s": "1" * 64, "t": NOW})
        run(text("INSERT INTO leases (token, case_id, user_id, created_at, expires_at) VALUES ('tok', 1, 1, :t, :e)"),
            {"t": NOW, "e": NOW + dt.timedelta(hours=1)})
    engine.dispose()


def test_upgrade_a_database_in_use_and_downgrade_it(database_url: str) -> None:
    migrate.downgrade(database_url, "0005")
    _seed_at_0005(database_url)
    migrate.upgrade(database_url, "head")
    engine = create_engine(database_url)
    with engine.connect() as conn:
        projects = conn.execute(text("SELECT control_fraction, control_seed, claim_count FROM projects ORDER BY id"))
        rows = projects.all()
        lease = conn.execute(text("SELECT token, arm, claim_seq, model_version_id, prediction_key FROM leases")).one()
    assert [(f, c) for f, _, c in rows] == [(0.1, 0), (0.1, 0)]
    seeds = [s for _, s, _ in rows]
    assert all(0 <= s < 2**31 for s in seeds) and seeds[0] != seeds[1]  # a random seed each (1 in 2^31 to clash)
    assert tuple(lease) == ("tok", None, None, None, None)  # served before arms were recorded
    assert "label_efforts" in inspect(engine).get_table_names()

    migrate.downgrade(database_url, "0005")
    inspector = inspect(engine)
    assert "label_efforts" not in inspector.get_table_names()
    assert "control_fraction" not in {c["name"] for c in inspector.get_columns("projects")}
    assert "arm" not in {c["name"] for c in inspector.get_columns("leases")}
    with engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM leases")).scalar() == 1  # the rows stay
        assert conn.execute(text("SELECT count(*) FROM projects")).scalar() == 2
    engine.dispose()
    migrate.upgrade(database_url, "head")
