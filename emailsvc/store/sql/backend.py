"""The embedded metadata backend: SQLite with the SQL directory and mail store."""
import os

from zope.interface import implementer

from emailsvc.interfaces import IMetadataBackend
from emailsvc.store.sql.directory import SQLDirectory
from emailsvc.store.sql.mail import SQLMailStore
from emailsvc.store.sql.sqlite import SQLiteDatabase


@implementer(IMetadataBackend)
class SQLiteBackend:
    """Directory and mail metadata in one SQLite database file."""

    def __init__(self, path: str, reactor, readers: int = 4):
        self.db = SQLiteDatabase(path, reactor, readers)
        self.directory = SQLDirectory(self.db, reactor.seconds)
        self.mail = SQLMailStore(self.db, reactor.seconds)

    @classmethod
    def from_config(cls, config, reactor):
        return cls(config.store.sqlite.path, reactor, config.store.sqlite.readers)

    def start(self):
        os.makedirs(os.path.dirname(os.path.abspath(self.db.path)), exist_ok=True)
        return self.db.start()

    def stop(self):
        return self.db.stop()
