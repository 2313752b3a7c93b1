"""The SQLite engine: group commit, per-job isolation, schema deltas."""
import os
import sqlite3
import threading

from twisted.internet import defer, reactor
from twisted.trial import unittest

from emailsvc.store.sql.deltas import _statements, deltas
from emailsvc.store.sql.search import begin_search
from emailsvc.store.sql.sqlite import SQLiteDatabase


class EngineTests(unittest.TestCase):
    @defer.inlineCallbacks
    def setUp(self):
        self.path = os.path.join(self.mktemp(), "db.sqlite3")
        os.makedirs(os.path.dirname(self.path))
        self.db = SQLiteDatabase(self.path, reactor)
        yield self.db.start()
        self.addCleanup(lambda: self.db.stop())
        yield self.db.write(lambda c: c.execute("CREATE TABLE t (v INTEGER UNIQUE)"))

    @defer.inlineCallbacks
    def test_concurrent_writes_share_commits(self):
        commits = []
        yield self.db.write(lambda c: c.set_trace_callback(
            lambda sql: commits.append(sql) if sql == "COMMIT" else None))
        before = len(commits)
        results = yield defer.gatherResults(
            [self.db.write(lambda c, v=v: c.execute("INSERT INTO t VALUES (?)", (v,)).rowcount)
             for v in range(200)])
        self.assertEqual(results, [1] * 200)
        self.assertLess(len(commits) - before, 200)
        count = yield self.db.read(lambda c: c.execute("SELECT count(*) FROM t").fetchone()[0])
        self.assertEqual(count, 200)

    @defer.inlineCallbacks
    def test_read_now_runs_in_the_calling_thread_and_read_in_another(self):
        yield self.db.write(lambda c: c.execute("INSERT INTO t VALUES (5)"))

        def query(connection):
            return threading.get_ident(), connection.execute("SELECT v FROM t").fetchall()

        now = self.db.read_now(query)
        self.assertEqual(self.successResultOf(now), (threading.get_ident(), [(5,)]))
        thread, rows = yield self.db.read(query)
        self.assertNotEqual(thread, threading.get_ident())
        self.assertEqual(rows, [(5,)])

    @defer.inlineCallbacks
    def test_search_folding_is_registered_once_per_connection(self):
        yield self.db.write(lambda c: c.executemany("INSERT INTO t VALUES (?)", [(1,), (2,)]))

        def query(connection):
            begin_search(connection)
            active = connection.execute("SELECT v FROM t ORDER BY v")  # still stepping
            # Registering the function again would fail here, with a
            # statement active (SQLite refuses), and with none it would
            # expire every statement the connection has prepared.
            begin_search(connection)
            return connection.execute("SELECT imap_fold('STRASSE')").fetchone()[0], active.fetchall()

        self.assertEqual(self.successResultOf(self.db.read_now(query)), ("strasse", [(1,), (2,)]))

    def test_read_now_fails_its_deferred_and_ends_its_transaction(self):
        def broken(connection):
            connection.execute("SELECT v FROM t")
            raise ValueError("boom")

        self.failureResultOf(self.db.read_now(broken), ValueError)
        # A transaction left open would make the next BEGIN fail.
        self.assertEqual(self.successResultOf(self.db.read_now(
            lambda c: c.execute("SELECT count(*) FROM t").fetchone()[0])), 0)

    @defer.inlineCallbacks
    def test_failing_job_rolls_back_alone(self):
        def insert_then_fail(connection):
            connection.execute("INSERT INTO t VALUES (1)")
            raise ValueError("boom")

        good = self.db.write(lambda c: c.execute("INSERT INTO t VALUES (2)"))
        bad = self.db.write(insert_then_fail)
        duplicate = self.db.write(lambda c: c.execute("INSERT INTO t VALUES (2)"))
        yield good
        yield self.assertFailure(bad, ValueError)
        yield self.assertFailure(duplicate, sqlite3.IntegrityError)
        values = yield self.db.read(lambda c: [r[0] for r in c.execute("SELECT v FROM t")])
        self.assertEqual(values, [2])

    @defer.inlineCallbacks
    def test_a_job_alone_needs_no_savepoint_and_still_rolls_back(self):
        statements = []
        yield self.db.write(lambda c: c.set_trace_callback(statements.append))

        def insert_then_fail(connection):
            connection.execute("INSERT INTO t VALUES (7)")
            raise ValueError("boom")

        yield self.assertFailure(self.db.write(insert_then_fail), ValueError)
        yield self.db.write(lambda c: c.execute("INSERT INTO t VALUES (8)"))
        self.assertIn("INSERT INTO t VALUES (7)", statements)  # the trace is watching
        self.assertFalse([sql for sql in statements if "SAVEPOINT" in sql or "RELEASE" in sql])
        values = yield self.db.read(lambda c: [r[0] for r in c.execute("SELECT v FROM t")])
        self.assertEqual(values, [8])

    @defer.inlineCallbacks
    def test_deltas_applied_once_and_recorded(self):
        recorded = yield self.db.read(
            lambda c: [r[0] for r in c.execute("SELECT number FROM schema_deltas ORDER BY number")])
        self.assertEqual(recorded, [number for number, _, _ in deltas("sqlite")])
        yield self.db.stop()
        self.db = SQLiteDatabase(self.path, reactor)
        yield self.db.start()
        again = yield self.db.read(lambda c: c.execute("SELECT count(*) FROM schema_deltas").fetchone()[0])
        self.assertEqual(again, len(recorded))

    def test_statement_splitting(self):
        sql = "-- comment\nCREATE TABLE a (\n x INT\n);\nCREATE INDEX i ON a (x);\n"
        self.assertEqual(_statements(sql), ["CREATE TABLE a (\n x INT\n);", "CREATE INDEX i ON a (x);"])
