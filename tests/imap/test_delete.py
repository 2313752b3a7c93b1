"""DELETE of a mailbox with inferior names (RFC 3501 6.3.4), over the protocol.

The mailbox and its messages go; its children stay and its name is listed
(\\Noselect \\HasChildren) until the last child is deleted or renamed away.
"""
from twisted.internet import defer

from tests.imap.support import IMAPTestCase


class DeleteWithChildrenTests(IMAPTestCase):
    @defer.inlineCallbacks
    def setUp(self):
        yield super().setUp()
        parent = yield self.mail.create_mailbox(self.user.id, "Work")
        yield self.mail.create_mailbox(self.user.id, "Work/2024")
        yield self.mail.create_mailbox(self.user.id, "Work/2025")
        yield self.mda.deliver(b"Subject: old\r\n\r\nbody\r\n", [self.user.id], "a@remote.example")
        yield self.mail.move((yield self.mail.get_mailbox(self.user.id, "INBOX")).id, [1], parent.id)
        self.assertEqual(len((yield self.mail.list_messages(parent.id))), 1)
        self.parent = parent

    def session(self, *commands):
        """Run `commands` (bytes) in one logged-in session; their reply lines, one list each."""
        return self.raw_session(lambda client: [client.command(b"c%d" % number, command)
                                                for number, command in enumerate(commands)])

    @defer.inlineCallbacks
    def test_delete_parent_becomes_noselect(self):
        deleted, listed, extended, select, status, again = yield self.session(
            b"DELETE Work",
            b'LIST "" "Work*"',
            b'LIST "" "%" RETURN (CHILDREN STATUS (MESSAGES))',
            b"SELECT Work",
            b"STATUS Work (MESSAGES)",
            b"DELETE Work",
        )
        self.assertEqual(deleted, [b"c0 OK DELETE completed\r\n"])
        self.assertEqual(listed[:-1], [b'* LIST (\\Noselect \\HasChildren) "/" Work\r\n',
                                       b'* LIST (\\HasNoChildren) "/" Work/2024\r\n',
                                       b'* LIST (\\HasNoChildren) "/" Work/2025\r\n'])
        self.assertIn(b'* LIST (\\Noselect \\HasChildren) "/" Work\r\n', extended)
        self.assertFalse(any(line.startswith(b"* STATUS Work ") for line in extended))
        self.assertTrue(select[-1].startswith(b"c3 NO [NONEXISTENT]"), select)
        self.assertTrue(status[-1].startswith(b"c4 NO [NONEXISTENT]"), status)
        self.assertTrue(again[-1].startswith(b"c5 NO [CANNOT]"), again)
        self.assertEqual((yield self.mail.list_messages(self.parent.id)), [])

    @defer.inlineCallbacks
    def test_noselect_goes_with_its_last_child(self):
        _, _, one_left, _, none_left, renamed = yield self.session(
            b"DELETE Work",
            b'RENAME Work/2025 Archive/2025',
            b'LIST "" "Work*"',
            b"DELETE Work/2024",
            b'LIST "" "Work*"',
            b'LIST "" "Archive*"',
        )
        self.assertEqual(one_left[:-1], [b'* LIST (\\Noselect \\HasChildren) "/" Work\r\n',
                                         b'* LIST (\\HasNoChildren) "/" Work/2024\r\n'])
        self.assertEqual(none_left, [b"c4 OK LIST completed\r\n"])
        self.assertEqual(renamed[:-1], [b'* LIST (\\HasChildren \\Archive) "/" Archive\r\n',
                                        b'* LIST (\\HasNoChildren) "/" Archive/2025\r\n'])

    @defer.inlineCallbacks
    def test_create_makes_it_a_mailbox_again(self):
        *_, created, listed, select = yield self.session(
            b"DELETE Work",
            b"CREATE Work",
            b'LIST "" "Work"',
            b"SELECT Work",
        )
        self.assertEqual(created, [b"c1 OK CREATE completed\r\n"])
        self.assertEqual(listed[0], b'* LIST (\\HasChildren) "/" Work\r\n')
        self.assertIn(b"* 0 EXISTS\r\n", select)
        self.assertTrue(select[-1].startswith(b"c3 OK"))
