"""Migration 0009_review on a database in use: label versions already there become submitted; downgrade undoes."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import create_engine, inspect, text

from app.core import migrate

NOW = dt.datetime(2026, 11, 1, 12)


def _seed_at_0008(url: str) -> None:
    engine = create_engine(url)
    with engine.begin() as conn:
        run = conn.execute
        run(text("INSERT INTO users (name, role, created_at, disabled) VALUES ('ann', 'annotator', :t, false)"),
            {"t": NOW})
        run(text("INSERT INTO projects (name, modality, labels, created_at, control_fraction, control_seed, "
                 "claim_count, annotators_can_upload_cases) VALUES ('p', 'CT', :l, :t, 0.1, 7, 0, false)"),
            {"l": '["background", "organ"]', "t": NOW})
        run(text("INSERT INTO patients (project_id, pseudonym, external_id_hash, created_at) "
                 "VALUES (1, 'PT-1', :h, :t)"), {"h": "0" * 64, "t": NOW})
        run(text("INSERT INTO cases (project_id, patient_id, sha256, blob_key, shape, spacing, origin, direction, "
                 "dtype, source_format, status, split, created_at, pinned, excluded) VALUES (1, 1, :s, 'k', "
                 "'[1, 1, 1]', '[1, 1, 1]', '[0, 0, 0]', '[1, 0, 0, 0, 1, 0, 0, 0, 1]', 'int16', 'nifti', "
                 "'labelled', 'pool', :t, false, false)"), {"s": "1" * 64, "t": NOW})
        for version in (1, 2):
            run(text("INSERT INTO label_versions (case_id, version, author_id, sha256, blob_key, created_at) "
                     "VALUES (1, :v, 1, :s, 'lk', :t)"), {"v": version, "s": str(version) * 64, "t": NOW})
    engine.dispose()


def test_existing_labels_become_submitted_and_downgrade_is_clean(database_url: str) -> None:
    migrate.downgrade(database_url, "0008")
    _seed_at_0008(database_url)
    migrate.upgrade(database_url, "head")
    engine = create_engine(database_url)
    with engine.connect() as conn:
        states = conn.execute(text("SELECT review_state, review_comment, reviewed_by, consensus_of "
                                   "FROM label_versions ORDER BY version")).all()
        project = conn.execute(text("SELECT train_on, readers_per_case, consensus_method FROM projects")).one()
    assert [tuple(row) for row in states] == [("submitted", None, None, None)] * 2
    assert tuple(project) == ("submitted", 1, "staple")  # today's behaviour
    assert {"review_leases", "reader_agreements"} <= set(inspect(engine).get_table_names())

    with engine.begin() as conn:  # values only the review code knows
        conn.execute(text("UPDATE cases SET status = 'in_review'"))
        conn.execute(text("UPDATE users SET role = 'reviewer'"))
    migrate.downgrade(database_url, "0008")
    with engine.connect() as conn:  # mapped back to what the older code handles
        assert conn.execute(text("SELECT status FROM cases")).scalar() == "labelled"
        assert conn.execute(text("SELECT role FROM users WHERE name = 'ann'")).scalar() == "annotator"
    inspector = inspect(engine)
    assert not {"review_leases", "reader_agreements"} & set(inspector.get_table_names())
    assert "review_state" not in {c["name"] for c in inspector.get_columns("label_versions")}
    assert "train_on" not in {c["name"] for c in inspector.get_columns("projects")}
    with engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM label_versions")).scalar() == 2  # the rows stay
    engine.dispose()
    migrate.upgrade(database_url, "head")
