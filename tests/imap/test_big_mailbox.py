"""Constant memory on a big mailbox (issue 4): 20,000 messages here, 100,000
in benchmarks/imap_bigmailbox.py.

A session keeps 4 bytes a message (its UID array) and reads records a page
at a time, so no command below allocates more than a few hundred KB of
Python objects at its peak.  Holding one MessageRecord per message, as a
session used to, costs about 400 bytes each: 8 MB here, well above the bound.
"""
from twisted.internet import defer

from tests.imap.bigmailbox import fill, probe
from tests.imap.support import PASSWORD, USER, IMAPTestCase

COUNT = 20_000
BOUND = 2_000_000
"""Peak bytes allowed for any one command (the UID array alone is 80 KB)."""


class BigMailboxTests(IMAPTestCase):
    timeout = 120

    @defer.inlineCallbacks
    def test_commands_in_constant_memory(self):
        inbox = yield self.mail.get_mailbox(self.user.id, "INBOX")
        yield fill(self.metadata.db, self.blobs, inbox.id, COUNT)
        results = yield self.in_thread(probe, self.tls, USER, PASSWORD, COUNT)
        by_name = {result["name"]: result for result in results}
        for result in results:
            self.assertTrue(result["status"].split()[1] == "OK", result)
            self.assertLess(result["peak"], BOUND, result)
        self.assertEqual(by_name["UID FETCH 1:* (UID FLAGS)"]["lines"], COUNT)
        self.assertEqual(by_name["UID SEARCH FLAGGED"]["lines"], 1)
        # Every tenth message is \Seen: UNSEEN lists the other 18,000 UIDs.
        self.assertGreater(by_name["UID SEARCH UNSEEN"]["octets"], 18_000 * 5)
        self.assertGreater(by_name["FETCH n BODY[]"]["octets"], 2000)
