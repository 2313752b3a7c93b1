-- Directory: domains, users, aliases.
CREATE TABLE domains (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    name TEXT NOT NULL UNIQUE,
    created BIGINT NOT NULL
);
CREATE TABLE users (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    domain_id INTEGER NOT NULL REFERENCES domains (id),
    address TEXT NOT NULL UNIQUE,
    password_hash TEXT NOT NULL,
    quota BIGINT,
    created BIGINT NOT NULL
);
CREATE INDEX users_domain ON users (domain_id);
CREATE TABLE aliases (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    domain_id INTEGER NOT NULL REFERENCES domains (id),
    source TEXT NOT NULL,
    destination TEXT NOT NULL,
    UNIQUE (source, destination)
);
CREATE INDEX aliases_destination ON aliases (destination);
-- Mail metadata: per-user counters, mailboxes, shared message contents,
-- messages, expunge log.
CREATE TABLE mail_users (
    user_id INTEGER PRIMARY KEY,
    last_uidvalidity BIGINT NOT NULL
);
CREATE TABLE mailboxes (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    user_id INTEGER NOT NULL,
    name TEXT NOT NULL,
    special_use TEXT,
    uidvalidity BIGINT NOT NULL,
    uidnext BIGINT NOT NULL DEFAULT 1,
    highestmodseq BIGINT NOT NULL DEFAULT 1,
    subscribed INTEGER NOT NULL DEFAULT 1,
    UNIQUE (user_id, name)
);
CREATE TABLE contents (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    blob_key TEXT NOT NULL UNIQUE,
    size BIGINT NOT NULL,
    parsed TEXT NOT NULL,
    created BIGINT NOT NULL
);
CREATE TABLE messages (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    mailbox_id INTEGER NOT NULL REFERENCES mailboxes (id) ON DELETE CASCADE,
    uid BIGINT NOT NULL,
    modseq BIGINT NOT NULL,
    flags INTEGER NOT NULL DEFAULT 0,
    keywords TEXT NOT NULL DEFAULT '',
    internal_date BIGINT NOT NULL,
    size BIGINT NOT NULL,
    content_id INTEGER NOT NULL REFERENCES contents (id),
    UNIQUE (mailbox_id, uid)
);
CREATE INDEX messages_modseq ON messages (mailbox_id, modseq);
CREATE INDEX messages_content ON messages (content_id);
CREATE TABLE expunged (
    mailbox_id INTEGER NOT NULL REFERENCES mailboxes (id) ON DELETE CASCADE,
    uid BIGINT NOT NULL,
    modseq BIGINT NOT NULL,
    PRIMARY KEY (mailbox_id, uid)
);
