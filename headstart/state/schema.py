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
-- Messages to send. The trigger engine inserts rows; the dispatcher only updates the status
-- columns. Not derived: a rebuild keeps it, so the unique idempotency key stops a replay from
-- enqueuing a message twice.
CREATE TABLE IF NOT EXISTS outbox (
    outbox_id INTEGER PRIMARY KEY,
    idempotency_key TEXT NOT NULL UNIQUE,
    person_id TEXT NOT NULL,
    rule TEXT NOT NULL,
    step TEXT NOT NULL,
    channel TEXT NOT NULL,
    payload TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    not_before INTEGER NOT NULL,
    status TEXT NOT NULL DEFAULT 'pending',
    attempts INTEGER NOT NULL DEFAULT 0,
    next_attempt_at INTEGER,
    last_error TEXT,
    sent_at INTEGER,
    provider_message_id TEXT
);
CREATE INDEX IF NOT EXISTS outbox_due ON outbox (status, next_attempt_at);
-- The in-app inbox, one row per delivered in-app message. Not derived: it records what a
-- person was shown, which a replay of the log cannot recreate.
CREATE TABLE IF NOT EXISTS inbox (
    message_id TEXT PRIMARY KEY,
    idempotency_key TEXT NOT NULL UNIQUE,
    outbox_id INTEGER NOT NULL,
    person_id TEXT NOT NULL,
    rule TEXT NOT NULL,
    step TEXT NOT NULL,
    priority INTEGER NOT NULL DEFAULT 0,
    content TEXT NOT NULL,
    delivered_at INTEGER NOT NULL,
    expires_at INTEGER,
    status TEXT NOT NULL DEFAULT 'new',
    shown_at INTEGER,
    dismissed_at INTEGER,
    completed_at INTEGER
);
CREATE INDEX IF NOT EXISTS inbox_person ON inbox (person_id, status);
-- Web Push subscriptions that browsers registered, by user id (the person may not exist yet
-- when the browser registers). Not derived.
CREATE TABLE IF NOT EXISTS push_subscriptions (
    endpoint TEXT PRIMARY KEY,
    user_id TEXT NOT NULL,
    p256dh TEXT NOT NULL,
    auth TEXT NOT NULL,
    created_at INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS push_subscriptions_user ON push_subscriptions (user_id);
"""

# Tables emptied when the state is rebuilt from the log. The outbox, inbox and push
# subscriptions are not among them because they record sends and browser registrations.
DERIVED_TABLES = (
    "identifiers",
    "persons",
    "merged_persons",
    "milestones",
    "merges",
    "warnings",
    "failed_events",
)
