-- Search indexing leaves the delivery transaction: the FTS5 trigram index
-- moves to a file of its own (PATH-search, created by SQLiteDatabase.start)
-- and is kept up by emailsvc.store.sql.indexer.  Triggers only log here the
-- id of every content inserted or deleted; search scans the text of a
-- logged id until the indexer has indexed it and deleted its rows.  The
-- existing contents are logged by SQLiteDatabase.start, which logs them
-- whenever it has to create the search file.
DROP TRIGGER contents_text_insert;
DROP TRIGGER contents_text_delete;
DROP TABLE contents_text;
CREATE TABLE search_pending (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    content_id INTEGER NOT NULL
);
CREATE INDEX search_pending_content ON search_pending (content_id);
CREATE TRIGGER search_pending_insert AFTER INSERT ON contents BEGIN INSERT INTO search_pending (content_id) VALUES (new.id); END;
CREATE TRIGGER search_pending_delete AFTER DELETE ON contents BEGIN INSERT INTO search_pending (content_id) VALUES (old.id); END;
