-- Substring search (IMAP SEARCH BODY/TEXT) over the text that parsing
-- extracted at delivery: an FTS5 trigram index, kept in step with contents
-- by triggers (case-insensitive; matches need 3 or more characters, shorter
-- needles are scanned).
CREATE VIRTUAL TABLE contents_text USING fts5(text, tokenize = 'trigram');
CREATE TRIGGER contents_text_insert AFTER INSERT ON contents BEGIN INSERT INTO contents_text (rowid, text) VALUES (new.id, coalesce(json_extract(new.parsed, '$.text'), '')); END;
CREATE TRIGGER contents_text_delete AFTER DELETE ON contents BEGIN DELETE FROM contents_text WHERE rowid = old.id; END;
INSERT INTO contents_text (rowid, text) SELECT id, coalesce(json_extract(parsed, '$.text'), '') FROM contents;
