"""Numbered schema deltas, applied in order once and recorded in a table.

Files are named `NNNN_description.sql` under a folder per SQL dialect.  An
applied delta is never edited: a change is a new file.
"""
import re
import time
from importlib import resources

_NAME = re.compile(r"^(\d{4})_[a-z0-9_]+\.sql$")


def deltas(dialect: str) -> list[tuple[int, str, str]]:
    """(number, name, SQL) of every delta of `dialect`, in order."""
    found = []
    for entry in resources.files(__package__).joinpath(dialect).iterdir():
        match = _NAME.match(entry.name)
        if match:
            found.append((int(match.group(1)), entry.name, entry.read_text("utf-8")))
    found.sort()
    numbers = [number for number, _, _ in found]
    if numbers != list(range(1, len(numbers) + 1)):
        raise RuntimeError(f"schema deltas for {dialect} are not numbered 1..N: {numbers}")
    return found


def apply_deltas(connection, dialect: str) -> list[str]:
    """Apply the deltas not yet recorded; each in its own transaction.

    `connection` is a DB-API connection in autocommit mode.  Returns the
    names applied.
    """
    connection.execute(
        "CREATE TABLE IF NOT EXISTS schema_deltas ("
        " number INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at BIGINT NOT NULL)"
    )
    applied = {row[0] for row in connection.execute("SELECT number FROM schema_deltas").fetchall()}
    done = []
    for number, name, sql in deltas(dialect):
        if number in applied:
            continue
        connection.execute("BEGIN")
        try:
            for statement in _statements(sql):
                connection.execute(statement)
            connection.execute(
                "INSERT INTO schema_deltas (number, name, applied_at) VALUES (?, ?, ?)",
                (number, name, int(time.time())),
            )
        except BaseException:
            connection.execute("ROLLBACK")
            raise
        connection.execute("COMMIT")
        done.append(name)
    return done


def _statements(sql: str) -> list[str]:
    """Split a delta into statements on lines ending with ';' (no ';' inside our SQL)."""
    statements, current = [], []
    for line in sql.splitlines():
        if line.strip().startswith("--"):
            continue
        current.append(line)
        if line.rstrip().endswith(";"):
            statements.append("\n".join(current).strip())
            current = []
    if "".join(current).strip():
        statements.append("\n".join(current).strip())
    return statements
