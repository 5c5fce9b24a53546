"""Tables of the derived-state database (``state.sqlite``)."""

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS identifiers (
    kind TEXT NOT NULL,
    value TEXT NOT NULL,
    person_id TEXT NOT NULL,
    PRIMARY KEY (kind, value)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS identifiers_person ON identifiers (person_id);
CREATE TABLE IF NOT EXISTS persons (
    person_id TEXT PRIMARY KEY,
    user_id TEXT UNIQUE,
    first_seen INTEGER,
    last_seen INTEGER,
    signup_at INTEGER,
    activated_at INTEGER,
    -- log sequence number of the batch that last wrote the row, for incremental readers
    updated_seq INTEGER NOT NULL,
    doc BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS persons_signup ON persons (signup_at);
CREATE INDEX IF NOT EXISTS persons_updated ON persons (updated_seq);
CREATE TABLE IF NOT EXISTS merged_persons (
    person_id TEXT PRIMARY KEY,
    merged_into TEXT NOT NULL
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS merged_persons_into ON merged_persons (merged_into);
CREATE TABLE IF NOT EXISTS milestones (
    person_id TEXT NOT NULL,
    milestone TEXT NOT NULL,
    reached_at INTEGER NOT NULL,
    PRIMARY KEY (person_id, milestone)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS merges (
    merge_id INTEGER PRIMARY KEY,
    seq INTEGER NOT NULL,
    at INTEGER NOT NULL,
    survivor TEXT NOT NULL,
    merged TEXT NOT NULL,
    reason TEXT NOT NULL,
    detail TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS merges_survivor ON merges (survivor);
CREATE INDEX IF NOT EXISTS merges_merged ON merges (merged);
CREATE TABLE IF NOT EXISTS warnings (
    warning_id INTEGER PRIMARY KEY,
    seq INTEGER NOT NULL,
    at INTEGER NOT NULL,
    person_id TEXT NOT NULL,
    code TEXT NOT NULL,
    message TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS warnings_person ON warnings (person_id);
CREATE TABLE IF NOT EXISTS failed_events (
    seq INTEGER PRIMARY KEY,
    error TEXT NOT NULL
);
"""

# Tables emptied when the state is rebuilt from the log.
DERIVED_TABLES = (
    "identifiers",
    "persons",
    "merged_persons",
    "milestones",
    "merges",
    "warnings",
    "failed_events",
)
