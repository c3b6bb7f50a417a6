"""Versioned schema migrations, applied in order inside one transaction each.

Never edit a released migration: add the next one. ``PRAGMA user_version`` holds the version.
"""

from __future__ import annotations

MIGRATIONS: list[str] = [
    # 1: foundation
    """
    CREATE TABLE patients (
        id INTEGER PRIMARY KEY,
        patient_id TEXT NOT NULL,
        issuer TEXT NOT NULL DEFAULT '',
        patient_name TEXT NOT NULL DEFAULT '',
        birth_date TEXT NOT NULL DEFAULT '',
        sex TEXT NOT NULL DEFAULT '',
        created_at TEXT NOT NULL,
        UNIQUE (patient_id, issuer)
    );
    CREATE TABLE studies (
        id INTEGER PRIMARY KEY,
        patient_pk INTEGER REFERENCES patients(id),
        study_instance_uid TEXT NOT NULL UNIQUE,
        accession_number TEXT NOT NULL DEFAULT '',
        study_date TEXT NOT NULL DEFAULT '',
        created_at TEXT NOT NULL
    );
    CREATE TABLE captures (
        id INTEGER PRIMARY KEY,
        source TEXT NOT NULL CHECK (source IN ('dicom', 'hotfolder', 'upload')),
        media_type TEXT NOT NULL,
        content_sha256 TEXT NOT NULL UNIQUE,
        file_path TEXT NOT NULL,
        size_bytes INTEGER NOT NULL,
        sop_class_uid TEXT,
        sop_instance_uid TEXT UNIQUE,
        laterality TEXT CHECK (laterality IN ('L', 'R')),
        laterality_source TEXT,
        patient_pk INTEGER REFERENCES patients(id),
        study_pk INTEGER REFERENCES studies(id),
        calling_ae TEXT,
        received_at TEXT NOT NULL,
        status TEXT NOT NULL DEFAULT 'received'
            CHECK (status IN ('received', 'processed', 'failed')),
        status_reason TEXT
    );
    CREATE INDEX captures_status ON captures(status, id);
    CREATE INDEX captures_study ON captures(study_pk);
    CREATE TABLE quality_reports (
        id INTEGER PRIMARY KEY,
        capture_pk INTEGER NOT NULL UNIQUE REFERENCES captures(id),
        gradable INTEGER NOT NULL,
        score REAL NOT NULL,
        reasons TEXT NOT NULL,
        guidance TEXT NOT NULL,
        metrics TEXT NOT NULL,
        field_geometry TEXT,
        created_at TEXT NOT NULL
    );
    CREATE TABLE results (
        id INTEGER PRIMARY KEY,
        capture_pk INTEGER NOT NULL REFERENCES captures(id),
        kind TEXT NOT NULL,
        payload TEXT NOT NULL,
        created_at TEXT NOT NULL
    );
    CREATE INDEX results_capture ON results(capture_pk);
    CREATE TABLE outbox_jobs (
        id INTEGER PRIMARY KEY,
        kind TEXT NOT NULL,
        destination TEXT NOT NULL,
        sop_instance_uid TEXT NOT NULL,
        file_path TEXT NOT NULL,
        study_instance_uid TEXT,
        state TEXT NOT NULL DEFAULT 'queued'
            CHECK (state IN ('queued', 'leased', 'delivered', 'dead')),
        attempts INTEGER NOT NULL DEFAULT 0,
        next_attempt_at TEXT NOT NULL,
        lease_until TEXT,
        last_status TEXT,
        last_error TEXT,
        created_at TEXT NOT NULL,
        updated_at TEXT NOT NULL,
        UNIQUE (destination, sop_instance_uid)
    );
    CREATE INDEX outbox_due ON outbox_jobs(state, next_attempt_at);
    CREATE TABLE audit_events (
        seq INTEGER PRIMARY KEY,
        event_time TEXT NOT NULL,
        event_id TEXT NOT NULL,
        event_type TEXT NOT NULL DEFAULT '',
        action TEXT NOT NULL,
        outcome INTEGER NOT NULL,
        user_id TEXT NOT NULL,
        ae_title TEXT NOT NULL DEFAULT '',
        source_address TEXT NOT NULL DEFAULT '',
        patient_id TEXT NOT NULL DEFAULT '',
        study_instance_uid TEXT NOT NULL DEFAULT '',
        sop_instance_uids TEXT NOT NULL DEFAULT '[]',
        detail TEXT NOT NULL DEFAULT '{}',
        prev_hash TEXT NOT NULL,
        hash TEXT NOT NULL
    );
    CREATE TRIGGER audit_events_no_update BEFORE UPDATE ON audit_events
    BEGIN SELECT RAISE(ABORT, 'audit events are append-only'); END;
    CREATE TRIGGER audit_events_no_delete BEFORE DELETE ON audit_events
    BEGIN SELECT RAISE(ABORT, 'audit events are append-only'); END;
    """,
    # 2: visit outcomes (append-only history; the newest row per visit is current)
    """
    CREATE TABLE visit_outcomes (
        id INTEGER PRIMARY KEY,
        visit_key TEXT NOT NULL,
        study_pk INTEGER REFERENCES studies(id),
        patient_pk INTEGER REFERENCES patients(id),
        code TEXT NOT NULL,
        rule_set TEXT NOT NULL,
        payload TEXT NOT NULL,
        created_at TEXT NOT NULL
    );
    CREATE INDEX visit_outcomes_visit ON visit_outcomes(visit_key, id);
    """,
    # 3: objects the appliance made (UIDs assigned once, saved before any send) and the study
    #    UID given to a visit whose images did not arrive as DICOM
    """
    CREATE TABLE visit_studies (
        visit_key TEXT PRIMARY KEY,
        study_instance_uid TEXT NOT NULL UNIQUE,
        created_at TEXT NOT NULL
    );
    CREATE TABLE derived_objects (
        id INTEGER PRIMARY KEY,
        capture_pk INTEGER REFERENCES captures(id),
        visit_key TEXT NOT NULL,
        kind TEXT NOT NULL,
        sop_class_uid TEXT NOT NULL,
        sop_instance_uid TEXT NOT NULL UNIQUE,
        series_instance_uid TEXT NOT NULL,
        study_instance_uid TEXT NOT NULL,
        file_path TEXT NOT NULL,
        references_json TEXT NOT NULL DEFAULT '[]',
        created_at TEXT NOT NULL
    );
    CREATE INDEX derived_objects_visit ON derived_objects(visit_key);
    """,
    # 4: web users, server-side sessions, the station's patient selection, clinician reviews
    """
    CREATE TABLE users (
        id INTEGER PRIMARY KEY,
        username TEXT NOT NULL UNIQUE COLLATE NOCASE,
        role TEXT NOT NULL CHECK (role IN ('operator', 'clinician', 'admin')),
        password_hash TEXT NOT NULL,
        active INTEGER NOT NULL DEFAULT 1,
        failed_logins INTEGER NOT NULL DEFAULT 0,
        locked_until TEXT,
        last_login_at TEXT,
        created_at TEXT NOT NULL,
        updated_at TEXT NOT NULL
    );
    CREATE TABLE web_sessions (
        id INTEGER PRIMARY KEY,
        token_sha256 TEXT NOT NULL UNIQUE,
        user_pk INTEGER NOT NULL REFERENCES users(id),
        address TEXT NOT NULL DEFAULT '',
        created_at TEXT NOT NULL,
        last_seen_at TEXT NOT NULL,
        ended_at TEXT,
        end_reason TEXT
    );
    CREATE INDEX web_sessions_user ON web_sessions(user_pk, ended_at);
    CREATE TABLE station_selections (
        id INTEGER PRIMARY KEY,
        station TEXT NOT NULL,
        user_pk INTEGER REFERENCES users(id),
        patient_id TEXT NOT NULL,
        issuer TEXT NOT NULL DEFAULT '',
        patient_name TEXT NOT NULL DEFAULT '',
        birth_date TEXT NOT NULL DEFAULT '',
        sex TEXT NOT NULL DEFAULT '',
        accession_number TEXT NOT NULL DEFAULT '',
        study_instance_uid TEXT NOT NULL DEFAULT '',
        request_json TEXT NOT NULL DEFAULT '{}',
        source TEXT NOT NULL CHECK (source IN ('worklist', 'walk-in')),
        selected_at TEXT NOT NULL,
        cleared_at TEXT
    );
    CREATE INDEX station_selections_current ON station_selections(station, cleared_at, id);
    CREATE TABLE reviews (
        id INTEGER PRIMARY KEY,
        visit_key TEXT NOT NULL,
        user_pk INTEGER NOT NULL REFERENCES users(id),
        decision TEXT NOT NULL CHECK (decision IN ('accept', 'override')),
        outcome_code TEXT NOT NULL,
        reason TEXT NOT NULL DEFAULT '',
        payload TEXT NOT NULL DEFAULT '{}',
        sr_sop_instance_uid TEXT,
        created_at TEXT NOT NULL
    );
    CREATE INDEX reviews_visit ON reviews(visit_key, id);
    """,
    # 5: retention: when an object's local files were deleted (the rows stay); jobs looked up
    #    by SOP Instance UID
    """
    ALTER TABLE captures ADD COLUMN purged_at TEXT;
    ALTER TABLE derived_objects ADD COLUMN purged_at TEXT;
    CREATE INDEX outbox_jobs_uid ON outbox_jobs(sop_instance_uid, state);
    """,
    # 6: storage commitment (push model) for destinations with storage_commitment on: each
    #    job's commitment state (NULL: not asked for; awaiting → requested → committed, or
    #    failed: sent again), the N-ACTION transactions and each instance's answer
    """
    ALTER TABLE outbox_jobs ADD COLUMN commitment TEXT
        CHECK (commitment IN ('awaiting', 'requested', 'committed', 'failed'));
    ALTER TABLE outbox_jobs ADD COLUMN commit_failures INTEGER NOT NULL DEFAULT 0;
    CREATE INDEX outbox_jobs_commitment ON outbox_jobs(destination, commitment);
    CREATE TABLE commitment_transactions (
        id INTEGER PRIMARY KEY,
        transaction_uid TEXT NOT NULL UNIQUE,
        destination TEXT NOT NULL,
        state TEXT NOT NULL DEFAULT 'requested'
            CHECK (state IN ('requested', 'answered', 'expired', 'unsent')),
        requested_at TEXT NOT NULL,
        answered_at TEXT,
        event_type INTEGER,
        error TEXT NOT NULL DEFAULT ''
    );
    CREATE INDEX commitment_transactions_open ON commitment_transactions(state, requested_at);
    CREATE TABLE commitment_items (
        transaction_pk INTEGER NOT NULL REFERENCES commitment_transactions(id),
        job_pk INTEGER NOT NULL REFERENCES outbox_jobs(id),
        sop_class_uid TEXT NOT NULL,
        sop_instance_uid TEXT NOT NULL,
        state TEXT NOT NULL DEFAULT 'requested'
            CHECK (state IN ('requested', 'committed', 'failed', 'expired')),
        failure_reason TEXT NOT NULL DEFAULT '',
        PRIMARY KEY (transaction_pk, job_pk)
    );
    CREATE INDEX commitment_items_job ON commitment_items(job_pk);
    """,
    # 7: a capture whose patient name, birth date or sex differs from the patient row it was
    #    filed under (same Patient ID): what was held and what the image said, as JSON; NULL
    #    when they agree
    """
    ALTER TABLE captures ADD COLUMN identity_conflict TEXT;
    """,
    # 8: result documents a visit still owes (SR, PDF; a heatmap SC per photograph), recorded in
    #    the transaction of the outcome that makes them due and deleted in the one that stores
    #    them; tried with backoff, then dead (reason kept) until an admin retries. Complete
    #    visits whose newest outcome has no SR after it owe theirs from before this version.
    """
    CREATE TABLE documents_due (
        id INTEGER PRIMARY KEY,
        visit_key TEXT NOT NULL,
        kind TEXT NOT NULL CHECK (kind IN ('sr', 'pdf', 'sc')),
        photo_pk INTEGER NOT NULL DEFAULT 0,
        capture_pk INTEGER NOT NULL REFERENCES captures(id),
        trigger TEXT NOT NULL,
        state TEXT NOT NULL DEFAULT 'due' CHECK (state IN ('due', 'dead')),
        attempts INTEGER NOT NULL DEFAULT 0,
        next_attempt_at TEXT NOT NULL,
        last_error TEXT NOT NULL DEFAULT '',
        created_at TEXT NOT NULL,
        updated_at TEXT NOT NULL,
        UNIQUE (visit_key, kind, photo_pk)
    );
    CREATE INDEX documents_due_next ON documents_due(state, next_attempt_at);
    INSERT INTO documents_due
        (visit_key, kind, capture_pk, trigger, next_attempt_at, created_at, updated_at)
    SELECT o.visit_key, k.kind, max(c.id), 'complete', o.created_at, o.created_at, o.created_at
    FROM visit_outcomes o
    JOIN (SELECT 'sr' AS kind UNION ALL SELECT 'pdf') k
    JOIN captures c ON c.status = 'processed' AND o.visit_key = CASE
        WHEN c.study_pk IS NOT NULL THEN 'study:' || c.study_pk
        WHEN c.patient_pk IS NOT NULL
            THEN 'patient:' || c.patient_pk || ':' || substr(c.received_at, 1, 10)
        ELSE 'capture:' || c.id END
    WHERE o.id = (SELECT max(id) FROM visit_outcomes WHERE visit_key = o.visit_key)
      AND json_extract(o.payload, '$.complete')
      AND NOT EXISTS (SELECT 1 FROM derived_objects d WHERE d.visit_key = o.visit_key
                      AND d.kind = k.kind AND d.created_at >= o.created_at)
    GROUP BY o.visit_key, k.kind;
    """,
    # 9: camera models qualified for automated screening (appliance validate on the camera's own
    #    labelled photographs met the DR card's acceptance targets): who, when, the report's hash
    #    and figures; revoked ones stay, marked
    """
    CREATE TABLE camera_qualifications (
        camera_model TEXT PRIMARY KEY,
        status TEXT NOT NULL CHECK (status IN ('qualified', 'revoked')),
        qualified_at TEXT NOT NULL,
        qualified_by TEXT NOT NULL,
        report_sha256 TEXT NOT NULL,
        figures TEXT NOT NULL
    );
    """,
    # 10: electronic signatures (21 CFR 11.50): a user's full name and credentials, printed on
    #     the signed report and carried as the SR's Verifying Observer; each sign-off keeps what
    #     it meant, the name and credentials as signed, and the signed PDF it issued
    """
    ALTER TABLE users ADD COLUMN full_name TEXT NOT NULL DEFAULT '';
    ALTER TABLE users ADD COLUMN credentials TEXT NOT NULL DEFAULT '';
    ALTER TABLE reviews ADD COLUMN meaning TEXT NOT NULL DEFAULT '';
    ALTER TABLE reviews ADD COLUMN signer_name TEXT NOT NULL DEFAULT '';
    ALTER TABLE reviews ADD COLUMN signer_credentials TEXT NOT NULL DEFAULT '';
    ALTER TABLE reviews ADD COLUMN pdf_sop_instance_uid TEXT;
    """,
    # 11: a person's decision on a
    #    photograph's eye: keep the given label, use the detected eye, relabel, or exclude it;
    #    who (user, role), why and when. Append-only; the newest row per capture is in force.
    """
    CREATE TABLE eye_decisions (
        id INTEGER PRIMARY KEY,
        capture_pk INTEGER NOT NULL REFERENCES captures(id),
        action TEXT NOT NULL
            CHECK (action IN ('keep_label', 'use_detected', 'relabel', 'exclude')),
        eye TEXT CHECK (eye IN ('L', 'R')),
        reason TEXT NOT NULL DEFAULT '',
        decided_by TEXT NOT NULL,
        role TEXT NOT NULL,
        decided_at TEXT NOT NULL,
        CHECK ((action = 'exclude') = (eye IS NULL))
    );
    CREATE INDEX eye_decisions_capture ON eye_decisions(capture_pk, id);
    CREATE TRIGGER eye_decisions_no_update BEFORE UPDATE ON eye_decisions
    BEGIN SELECT RAISE(ABORT, 'eye decisions are append-only'); END;
    CREATE TRIGGER eye_decisions_no_delete BEFORE DELETE ON eye_decisions
    BEGIN SELECT RAISE(ABORT, 'eye decisions are append-only'); END;
    """,
    # 12: an OCT volume's Ophthalmic Thickness Map (kind 'opm', photo_pk = the OPT capture) can
    #     be owed like a heatmap SC: documents_due rebuilt with the wider kind check, rows kept
    """
    CREATE TABLE documents_due_12 (
        id INTEGER PRIMARY KEY,
        visit_key TEXT NOT NULL,
        kind TEXT NOT NULL CHECK (kind IN ('sr', 'pdf', 'sc', 'opm')),
        photo_pk INTEGER NOT NULL DEFAULT 0,
        capture_pk INTEGER NOT NULL REFERENCES captures(id),
        trigger TEXT NOT NULL,
        state TEXT NOT NULL DEFAULT 'due' CHECK (state IN ('due', 'dead')),
        attempts INTEGER NOT NULL DEFAULT 0,
        next_attempt_at TEXT NOT NULL,
        last_error TEXT NOT NULL DEFAULT '',
        created_at TEXT NOT NULL,
        updated_at TEXT NOT NULL,
        UNIQUE (visit_key, kind, photo_pk)
    );
    INSERT INTO documents_due_12 (id, visit_key, kind, photo_pk, capture_pk, trigger, state,
        attempts, next_attempt_at, last_error, created_at, updated_at)
    SELECT id, visit_key, kind, photo_pk, capture_pk, trigger, state, attempts,
        next_attempt_at, last_error, created_at, updated_at FROM documents_due;
    DROP TABLE documents_due;
    ALTER TABLE documents_due_12 RENAME TO documents_due;
    CREATE INDEX documents_due_next ON documents_due(state, next_attempt_at);
    """,
    # 13: an OCT volume's DICOM Segmentation (kind 'seg', photo_pk = the OPT capture) is owed
    #     by its analysis: documents_due rebuilt with the wider kind check, rows kept
    """
    CREATE TABLE documents_due_13 (
        id INTEGER PRIMARY KEY,
        visit_key TEXT NOT NULL,
        kind TEXT NOT NULL CHECK (kind IN ('sr', 'pdf', 'sc', 'opm', 'seg')),
        photo_pk INTEGER NOT NULL DEFAULT 0,
        capture_pk INTEGER NOT NULL REFERENCES captures(id),
        trigger TEXT NOT NULL,
        state TEXT NOT NULL DEFAULT 'due' CHECK (state IN ('due', 'dead')),
        attempts INTEGER NOT NULL DEFAULT 0,
        next_attempt_at TEXT NOT NULL,
        last_error TEXT NOT NULL DEFAULT '',
        created_at TEXT NOT NULL,
        updated_at TEXT NOT NULL,
        UNIQUE (visit_key, kind, photo_pk)
    );
    INSERT INTO documents_due_13 (id, visit_key, kind, photo_pk, capture_pk, trigger, state,
        attempts, next_attempt_at, last_error, created_at, updated_at)
    SELECT id, visit_key, kind, photo_pk, capture_pk, trigger, state, attempts,
        next_attempt_at, last_error, created_at, updated_at FROM documents_due;
    DROP TABLE documents_due;
    ALTER TABLE documents_due_13 RENAME TO documents_due;
    CREATE INDEX documents_due_next ON documents_due(state, next_attempt_at);
    """,
]
