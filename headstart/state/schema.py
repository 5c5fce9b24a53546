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
-- One row per distinct problem of a person: ``key`` identifies it, ``message`` describes its
-- first occurrence (at ``seq``), and ``count`` / ``last_seq`` track the repeats.
CREATE TABLE IF NOT EXISTS warnings (
    warning_id INTEGER PRIMARY KEY,
    seq INTEGER NOT NULL,
    at INTEGER NOT NULL,
    person_id TEXT NOT NULL,
    code TEXT NOT NULL,
    key TEXT NOT NULL,
    message TEXT NOT NULL,
    count INTEGER NOT NULL DEFAULT 1,
    last_seq INTEGER NOT NULL
);
CREATE UNIQUE INDEX IF NOT EXISTS warnings_person ON warnings (person_id, code, key);
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
-- Frequency caps count a person's sends per channel around a send time.
CREATE INDEX IF NOT EXISTS outbox_person ON outbox (person_id, channel, not_before);
-- Trigger enrollments: a person watching for or inside a rule, per correlation key. Not
-- derived, like every trigger table below: a rebuild keeps them, so journeys in progress go on
-- and events decided before the rebuild are not decided again.
CREATE TABLE IF NOT EXISTS enrollments (
    enrollment_id INTEGER PRIMARY KEY,
    rule TEXT NOT NULL,
    person_id TEXT NOT NULL,
    -- correlation key value; '' when the rule has none
    key TEXT NOT NULL,
    -- log sequence number of the event that started it, part of every idempotency key
    occurrence TEXT NOT NULL,
    -- watching (absence or stall entry pending), active, completed, exited, goal, cancelled
    status TEXT NOT NULL,
    -- the step the enrollment waits at, while active
    step TEXT,
    rule_version TEXT NOT NULL,
    started_at INTEGER NOT NULL,
    entered_at INTEGER,
    ended_at INTEGER,
    reason TEXT,
    -- JSON: the event that entered or last resumed it (name, properties, timestamp, seq)
    context BLOB NOT NULL
);
-- One open enrollment per rule, person and key; also how a person's open ones are read.
CREATE UNIQUE INDEX IF NOT EXISTS enrollments_open ON enrollments (person_id, rule, key)
    WHERE status IN ('watching', 'active');
CREATE INDEX IF NOT EXISTS enrollments_history ON enrollments (person_id, rule, key, entered_at);
-- Pending timers only: a fired or cancelled timer is deleted.
CREATE TABLE IF NOT EXISTS timers (
    timer_id INTEGER PRIMARY KEY,
    due INTEGER NOT NULL,
    -- absence, stall, wait, wait_for, in_app_expiry
    kind TEXT NOT NULL,
    person_id TEXT NOT NULL,
    enrollment_id INTEGER,
    step TEXT,
    -- in_app_expiry: the idempotency key of the open in-app message
    ref TEXT
);
CREATE INDEX IF NOT EXISTS timers_due ON timers (due);
CREATE INDEX IF NOT EXISTS timers_enrollment ON timers (enrollment_id);
-- In-app messages per person: at most one open (handed to the outbox), the rest queued.
CREATE TABLE IF NOT EXISTS inapp_slots (
    idempotency_key TEXT PRIMARY KEY,
    person_id TEXT NOT NULL,
    -- queued, open, closed
    status TEXT NOT NULL,
    priority INTEGER NOT NULL,
    rule TEXT NOT NULL,
    step TEXT NOT NULL,
    channel TEXT NOT NULL,
    payload TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    opened_at INTEGER,
    closed_at INTEGER,
    -- when an open message stops holding the slot
    expires_at INTEGER,
    -- the in_app_expiry timer, armed only while another message waits in the queue
    timer_id INTEGER
);
CREATE INDEX IF NOT EXISTS inapp_slots_person ON inapp_slots (person_id, status);
-- Every trigger decision with its reason, for the person timeline.
CREATE TABLE IF NOT EXISTS decisions (
    decision_id INTEGER PRIMARY KEY,
    at INTEGER NOT NULL,
    person_id TEXT NOT NULL,
    rule TEXT NOT NULL,
    enrollment_id INTEGER,
    step TEXT,
    kind TEXT NOT NULL,
    reason TEXT NOT NULL,
    -- the log event that led to it; null for a timer
    seq INTEGER,
    detail TEXT
);
CREATE INDEX IF NOT EXISTS decisions_person ON decisions (person_id, decision_id);
-- Events the triggers emit (emit and set_trait steps), appended to the log after the commit.
CREATE TABLE IF NOT EXISTS trigger_emits (
    message_id TEXT PRIMARY KEY,
    body BLOB NOT NULL,
    created_at INTEGER NOT NULL,
    appended_at INTEGER
);
CREATE INDEX IF NOT EXISTS trigger_emits_pending ON trigger_emits (created_at)
    WHERE appended_at IS NULL;
"""

# Meta key present while a rebuild still has to move trigger and delivery rows to new person
# ids (headstart.state.remap). The in-app API answers 503 until it is gone.
REMAP_AT_KEY = "rebuild_remap_at"

# Tables emptied when the state is rebuilt from the log. The outbox, inbox and push
# subscriptions are not among them because they record sends and browser registrations, nor
# are the trigger tables (enrollments, timers, inapp_slots, decisions, trigger_emits), because
# they record decisions already taken.
DERIVED_TABLES = (
    "identifiers",
    "persons",
    "merged_persons",
    "milestones",
    "merges",
    "warnings",
    "failed_events",
)
