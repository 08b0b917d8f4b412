-- Results DB, first version: the contract tables of the architecture sketch plus the GPU batch
-- plan. {{pk}}, {{ts}} and {{date}} are filled in per dialect (Postgres / SQLite) by the runner.

CREATE TABLE archives (
    id            {{pk}},
    name          TEXT NOT NULL,
    sha256        TEXT NOT NULL UNIQUE,
    run_date      {{date}} NOT NULL,
    status        TEXT NOT NULL DEFAULT 'registered'
                  CHECK (status IN ('registered', 'unpacked', 'rejected')),
    path          TEXT NOT NULL,
    n_files       INTEGER,
    bytes         BIGINT,
    error         TEXT,
    registered_at {{ts}} NOT NULL DEFAULT CURRENT_TIMESTAMP,
    updated_at    {{ts}} NOT NULL DEFAULT CURRENT_TIMESTAMP
);
CREATE INDEX archives_run_date ON archives (run_date, status);

CREATE TABLE audio_files (
    id          {{pk}},
    archive_id  BIGINT NOT NULL REFERENCES archives (id),
    member_path TEXT NOT NULL,
    sha256      TEXT,
    path        TEXT NOT NULL,
    bytes       BIGINT,
    format      TEXT,
    duration_s  REAL,
    sample_rate INTEGER,
    channels    INTEGER,
    silent      INTEGER NOT NULL DEFAULT 0 CHECK (silent IN (0, 1)),
    status      TEXT NOT NULL
                CHECK (status IN ('ready', 'transcribed', 'classified', 'quarantined')),
    error       TEXT,
    created_at  {{ts}} NOT NULL DEFAULT CURRENT_TIMESTAMP,
    updated_at  {{ts}} NOT NULL DEFAULT CURRENT_TIMESTAMP,
    UNIQUE (archive_id, member_path)
);
CREATE INDEX audio_files_status ON audio_files (status);

CREATE TABLE transcripts (
    id         {{pk}},
    file_id    BIGINT NOT NULL REFERENCES audio_files (id),
    model      TEXT NOT NULL,
    text       TEXT NOT NULL,
    n_chars    INTEGER NOT NULL,
    created_at {{ts}} NOT NULL DEFAULT CURRENT_TIMESTAMP,
    UNIQUE (file_id, model)
);

CREATE TABLE labels (
    id         {{pk}},
    file_id    BIGINT NOT NULL REFERENCES audio_files (id),
    policy     TEXT NOT NULL,
    policy_sha TEXT NOT NULL,
    model      TEXT NOT NULL,
    score      REAL NOT NULL CHECK (score >= 0 AND score <= 1),
    label      INTEGER NOT NULL CHECK (label IN (0, 1)),
    created_at {{ts}} NOT NULL DEFAULT CURRENT_TIMESTAMP,
    UNIQUE (file_id, policy, policy_sha, model)
);

CREATE TABLE review_queue (
    id            {{pk}},
    file_id       BIGINT NOT NULL REFERENCES audio_files (id),
    policy        TEXT NOT NULL,
    score         REAL NOT NULL,
    status        TEXT NOT NULL DEFAULT 'pending'
                  CHECK (status IN ('pending', 'claimed', 'resolved')),
    claimed_by    TEXT,
    claimed_until {{ts}},
    decision      TEXT,
    note          TEXT,
    created_at    {{ts}} NOT NULL DEFAULT CURRENT_TIMESTAMP,
    resolved_at   {{ts}},
    UNIQUE (file_id, policy)
);
CREATE INDEX review_queue_status ON review_queue (status);

-- One row per planned GPU batch of an Airflow run; the GPU tasks record their throughput here so
-- the noon check can compute an ETA.
CREATE TABLE gpu_batches (
    id                 {{pk}},
    run_id             TEXT NOT NULL,
    run_date           {{date}} NOT NULL,
    seq                INTEGER NOT NULL,
    n_files            INTEGER NOT NULL,
    audio_s            REAL NOT NULL,
    transcribe_wall_s  REAL,
    transcribed_files  INTEGER,
    classify_wall_s    REAL,
    classified_items   INTEGER,
    created_at         {{ts}} NOT NULL DEFAULT CURRENT_TIMESTAMP,
    UNIQUE (run_id, seq)
);

CREATE TABLE batch_files (
    batch_id BIGINT NOT NULL REFERENCES gpu_batches (id) ON DELETE CASCADE,
    file_id  BIGINT NOT NULL REFERENCES audio_files (id),
    PRIMARY KEY (batch_id, file_id)
);
