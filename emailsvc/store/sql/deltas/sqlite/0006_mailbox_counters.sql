-- Message count, unseen count (flags bit 1 is \Seen) and total size on the
-- mailbox row, so reading a mailbox (every IMAP command of a selected
-- session, STATUS, LIST-STATUS, quota) does not count its messages.
-- Triggers keep them in step in the transaction that changes messages.
ALTER TABLE mailboxes ADD COLUMN message_count BIGINT NOT NULL DEFAULT 0;
ALTER TABLE mailboxes ADD COLUMN unseen_count BIGINT NOT NULL DEFAULT 0;
ALTER TABLE mailboxes ADD COLUMN total_size BIGINT NOT NULL DEFAULT 0;
UPDATE mailboxes SET message_count = (SELECT count(*) FROM messages m WHERE m.mailbox_id = mailboxes.id), unseen_count = (SELECT count(*) FROM messages m WHERE m.mailbox_id = mailboxes.id AND m.flags & 1 = 0), total_size = (SELECT coalesce(sum(m.size), 0) FROM messages m WHERE m.mailbox_id = mailboxes.id);
CREATE TRIGGER messages_count_insert AFTER INSERT ON messages BEGIN UPDATE mailboxes SET message_count = message_count + 1, unseen_count = unseen_count + (new.flags & 1 = 0), total_size = total_size + new.size WHERE id = new.mailbox_id; END;
CREATE TRIGGER messages_count_delete AFTER DELETE ON messages BEGIN UPDATE mailboxes SET message_count = message_count - 1, unseen_count = unseen_count - (old.flags & 1 = 0), total_size = total_size - old.size WHERE id = old.mailbox_id; END;
CREATE TRIGGER messages_count_update AFTER UPDATE OF mailbox_id, flags, size ON messages WHEN old.mailbox_id != new.mailbox_id OR (old.flags & 1) != (new.flags & 1) OR old.size != new.size BEGIN UPDATE mailboxes SET message_count = message_count - 1, unseen_count = unseen_count - (old.flags & 1 = 0), total_size = total_size - old.size WHERE id = old.mailbox_id; UPDATE mailboxes SET message_count = message_count + 1, unseen_count = unseen_count + (new.flags & 1 = 0), total_size = total_size + new.size WHERE id = new.mailbox_id; END;
