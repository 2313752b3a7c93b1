-- Delayed-delivery notices (RFC 3464 Action: delayed): delay_warned is 1
-- once the sender has been told that a recipient is still pending after
-- queue.delay_warning seconds, so each recipient is warned at most once.
ALTER TABLE queue_recipients ADD COLUMN delay_warned INTEGER NOT NULL DEFAULT 0;
