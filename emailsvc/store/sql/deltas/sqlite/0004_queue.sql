-- The outbound queue: one row per queued message (its blob and envelope)
-- and one per recipient, each with its own status, retry schedule and
-- lease.  A runner leases due recipient rows (lease_owner, lease_until);
-- a lease that runs out makes the rows of a crashed runner due again.
-- dsn_pending is 1 while a failed or expired recipient still owes the
-- sender a delivery status notification.
CREATE TABLE queue_messages (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    queue_id TEXT NOT NULL UNIQUE,
    blob_key TEXT NOT NULL,
    size BIGINT NOT NULL,
    sender TEXT NOT NULL,
    created BIGINT NOT NULL,
    envelope TEXT NOT NULL DEFAULT '{}'
);
CREATE INDEX queue_messages_blob ON queue_messages (blob_key);
CREATE TABLE queue_recipients (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    message_id INTEGER NOT NULL REFERENCES queue_messages (id) ON DELETE CASCADE,
    recipient TEXT NOT NULL,
    domain TEXT NOT NULL,
    status TEXT NOT NULL DEFAULT 'pending'
        CHECK (status IN ('pending', 'delivered', 'failed', 'expired')),
    attempts INTEGER NOT NULL DEFAULT 0,
    next_attempt BIGINT NOT NULL,
    lease_owner TEXT,
    lease_until BIGINT,
    last_reply TEXT NOT NULL DEFAULT '',
    remote_host TEXT NOT NULL DEFAULT '',
    dsn_pending INTEGER NOT NULL DEFAULT 0,
    updated BIGINT NOT NULL
);
CREATE INDEX queue_recipients_due ON queue_recipients (status, next_attempt);
CREATE INDEX queue_recipients_dsn ON queue_recipients (dsn_pending);
CREATE INDEX queue_recipients_message ON queue_recipients (message_id);
