"""The directory (domains, users, aliases) in SQL."""
from __future__ import annotations

import functools

from twisted.internet import defer
from zope.interface import implementer

from emailsvc.addresses import normalize_address, normalize_domain, split_address
from emailsvc.cred.passwords import hash_later, hash_password, needs_rehash, verify_later
from emailsvc.errors import AlreadyExists, InvalidName, NotEmpty, NotFound
from emailsvc.interfaces import IDirectory
from emailsvc.store.model import Alias, Resolution, User

_USER_COLUMNS = "id, address, quota"
# Verifying against a real hash when the user is unknown keeps the timing
# the same, so failures do not reveal whether a user exists.
_DUMMY_HASH = hash_password("emailsvc timing equaliser")


def _deferred(method):
    """Report validation errors as a failed Deferred, like storage errors."""

    @functools.wraps(method)
    def wrapper(*args, **kwargs):
        return defer.maybeDeferred(method, *args, **kwargs)

    return wrapper


def _user(row) -> User | None:
    return User(id=row[0], address=row[1], quota=row[2]) if row else None


def _alias_source(source: str) -> str:
    """An alias source: a full address, or `@domain` for a catch-all."""
    if source.strip().startswith("@"):
        return "@" + normalize_domain(source.strip()[1:])
    return normalize_address(source)


def _domain_of(address: str) -> str:
    return address.rpartition("@")[2]


@implementer(IDirectory)
class SQLDirectory:
    """IDirectory over a database engine (SQLiteDatabase or PostgreSQL)."""

    def __init__(self, db, now):
        self._db = db
        self._now = now

    # Domains

    @_deferred
    def add_domain(self, name):
        domain = normalize_domain(name)

        def add(connection):
            if connection.execute("SELECT 1 FROM domains WHERE name = ?", (domain,)).fetchone():
                raise AlreadyExists(f"domain {domain} exists already")
            connection.execute(
                "INSERT INTO domains (name, created) VALUES (?, ?)", (domain, int(self._now()))
            )
            return domain

        return self._db.write(add)

    @_deferred
    def remove_domain(self, name):
        domain = normalize_domain(name)

        def remove(connection):
            row = connection.execute("SELECT id FROM domains WHERE name = ?", (domain,)).fetchone()
            if row is None:
                raise NotFound(f"no such domain: {domain}")
            users = connection.execute("SELECT count(*) FROM users WHERE domain_id = ?", row).fetchone()[0]
            aliases = connection.execute("SELECT count(*) FROM aliases WHERE domain_id = ?", row).fetchone()[0]
            if users or aliases:
                raise NotEmpty(f"domain {domain} still has {users} users and {aliases} aliases")
            connection.execute("DELETE FROM domains WHERE id = ?", row)

        return self._db.write(remove)

    def list_domains(self):
        def query(connection):
            return [row[0] for row in connection.execute("SELECT name FROM domains ORDER BY name")]

        return self._db.read(query)

    # Users

    @defer.inlineCallbacks
    def add_user(self, address, password, quota=None):
        address = normalize_address(address)
        _check_password(password)
        hashed = yield hash_later(password)

        def add(connection):
            domain_id = self._domain_id(connection, _domain_of(address))
            if connection.execute("SELECT 1 FROM users WHERE address = ?", (address,)).fetchone():
                raise AlreadyExists(f"user {address} exists already")
            if connection.execute("SELECT 1 FROM aliases WHERE source = ?", (address,)).fetchone():
                raise AlreadyExists(f"{address} is an alias already")
            row = connection.execute(
                "INSERT INTO users (domain_id, address, password_hash, quota, created)"
                " VALUES (?, ?, ?, ?, ?) RETURNING " + _USER_COLUMNS,
                (domain_id, address, hashed, quota, int(self._now())),
            ).fetchone()
            return _user(row)

        user = yield self._db.write(add)
        return user

    @defer.inlineCallbacks
    def set_password(self, address, password):
        address = normalize_address(address)
        _check_password(password)
        hashed = yield hash_later(password)
        yield self._db.write(self._update_user, address, "password_hash", hashed)

    @_deferred
    def set_quota(self, address, quota):
        if quota is not None and quota < 0:
            raise InvalidName("a quota cannot be negative")
        return self._db.write(self._update_user, normalize_address(address), "quota", quota)

    @staticmethod
    def _update_user(connection, address, column, value):
        cursor = connection.execute(f"UPDATE users SET {column} = ? WHERE address = ?", (value, address))
        if cursor.rowcount != 1:
            raise NotFound(f"no such user: {address}")

    def get_user(self, address):
        try:
            address = normalize_address(address)
        except InvalidName:
            return defer.succeed(None)

        def query(connection):
            return _user(
                connection.execute(
                    f"SELECT {_USER_COLUMNS} FROM users WHERE address = ?", (address,)
                ).fetchone()
            )

        return self._db.read_now(query)

    def get_user_by_id(self, user_id):
        def query(connection):
            return _user(
                connection.execute(f"SELECT {_USER_COLUMNS} FROM users WHERE id = ?", (user_id,)).fetchone()
            )

        return self._db.read_now(query)

    @_deferred
    def list_users(self, domain=None):
        def query(connection):
            sql = f"SELECT {_USER_COLUMNS} FROM users"
            args = ()
            if domain is not None:
                sql += " WHERE domain_id = (SELECT id FROM domains WHERE name = ?)"
                args = (normalize_domain(domain),)
            return [_user(row) for row in connection.execute(sql + " ORDER BY address", args)]

        return self._db.read(query)

    @_deferred
    def remove_user(self, address):
        address = normalize_address(address)

        def remove(connection):
            row = connection.execute(
                f"SELECT {_USER_COLUMNS} FROM users WHERE address = ?", (address,)
            ).fetchone()
            if row is None:
                raise NotFound(f"no such user: {address}")
            connection.execute("DELETE FROM aliases WHERE destination = ?", (address,))
            connection.execute("DELETE FROM users WHERE id = ?", (row[0],))
            return _user(row)

        return self._db.write(remove)

    @defer.inlineCallbacks
    def authenticate(self, address, password):
        try:
            address = normalize_address(address)
        except InvalidName:
            address = None

        def query(connection):
            return connection.execute(
                f"SELECT {_USER_COLUMNS}, password_hash FROM users WHERE address = ?", (address,)
            ).fetchone()

        row = (yield self._db.read_now(query)) if address else None
        hashed = row[3] if row else _DUMMY_HASH
        ok = yield verify_later(hashed, password)
        if not (ok and row):
            return None
        if needs_rehash(hashed):
            yield self.set_password(address, password)
        return _user(row[:3])

    # Aliases

    @_deferred
    def add_alias(self, source, destination):
        source = _alias_source(source)
        destination = normalize_address(destination)

        def add(connection):
            domain_id = self._domain_id(connection, _domain_of(source))
            if connection.execute("SELECT 1 FROM users WHERE address = ?", (source,)).fetchone():
                raise AlreadyExists(f"{source} is a user already")
            if connection.execute(
                "SELECT 1 FROM aliases WHERE source = ? AND destination = ?", (source, destination)
            ).fetchone():
                raise AlreadyExists(f"alias {source} -> {destination} exists already")
            connection.execute(
                "INSERT INTO aliases (domain_id, source, destination) VALUES (?, ?, ?)",
                (domain_id, source, destination),
            )
            return Alias(source, destination)

        return self._db.write(add)

    @_deferred
    def remove_alias(self, source, destination=None):
        source = _alias_source(source)
        sql, args = "DELETE FROM aliases WHERE source = ?", [source]
        if destination is not None:
            sql += " AND destination = ?"
            args.append(normalize_address(destination))

        def remove(connection):
            if connection.execute(sql, args).rowcount == 0:
                raise NotFound(f"no such alias: {source}" + (f" -> {destination}" if destination else ""))

        return self._db.write(remove)

    @_deferred
    def list_aliases(self, domain=None):
        def query(connection):
            sql = "SELECT source, destination FROM aliases"
            args = ()
            if domain is not None:
                sql += " WHERE domain_id = (SELECT id FROM domains WHERE name = ?)"
                args = (normalize_domain(domain),)
            return [Alias(*row) for row in connection.execute(sql + " ORDER BY source, destination", args)]

        return self._db.read(query)

    def resolve(self, address):
        try:
            local, domain = split_address(address)
        except InvalidName:
            return defer.succeed(Resolution())
        return self._db.read_now(_resolve, f"{local}@{domain}", domain)

    @staticmethod
    def _domain_id(connection, domain):
        row = connection.execute("SELECT id FROM domains WHERE name = ?", (domain,)).fetchone()
        if row is None:
            raise NotFound(f"no such domain: {domain}")
        return row[0]


_MAX_ALIAS_DEPTH = 8


def _resolve(connection, address, domain) -> Resolution:
    """Expand aliases (nested up to a depth) and the domain's catch-all."""
    if not connection.execute("SELECT 1 FROM domains WHERE name = ?", (domain,)).fetchone():
        return Resolution()
    users: dict[int, User] = {}
    seen = set()
    pending = [address]
    for _ in range(_MAX_ALIAS_DEPTH):
        following = []
        for current in pending:
            if current in seen:
                continue
            seen.add(current)
            row = connection.execute(
                f"SELECT {_USER_COLUMNS} FROM users WHERE address = ?", (current,)
            ).fetchone()
            if row:
                users.setdefault(row[0], _user(row))
                continue
            targets = [r[0] for r in connection.execute(
                "SELECT destination FROM aliases WHERE source = ?", (current,)
            )]
            if not targets and current == address:
                targets = [r[0] for r in connection.execute(
                    "SELECT destination FROM aliases WHERE source = ?", ("@" + domain,)
                )]
            following.extend(targets)
        pending = following
        if not pending:
            break
    return Resolution(users=tuple(users.values()), local_domain=True)


def _check_password(password: str):
    if not password or len(password) > 1024:
        raise InvalidName("a password must have 1 to 1024 characters")
