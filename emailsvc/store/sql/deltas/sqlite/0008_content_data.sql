-- The bytes of small messages, committed in the same transaction as their
-- rows (emailsvc.store.inline).  A content whose blob_key starts with
-- "inline-" has its bytes here; any other is in the blob store.  They go
-- with their contents row.
CREATE TABLE content_data (
    content_id INTEGER PRIMARY KEY REFERENCES contents (id) ON DELETE CASCADE,
    data BLOB NOT NULL
);
