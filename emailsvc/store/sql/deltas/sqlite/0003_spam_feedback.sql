-- Spam/ham feedback: a user moved a message into (spam) or out of (ham)
-- their Junk mailbox.  Kept for training; content_id may outlive its row in
-- contents once the garbage collector has run.
CREATE TABLE spam_feedback (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    user_id INTEGER NOT NULL,
    content_id INTEGER NOT NULL,
    verdict TEXT NOT NULL CHECK (verdict IN ('spam', 'ham')),
    created BIGINT NOT NULL
);
CREATE INDEX spam_feedback_user ON spam_feedback (user_id, created);
