"""Every zope Interface of emailsvc.

Protocols reach data only through these; backends implement them.  All
methods that touch storage return Deferreds.
"""
from zope.interface import Attribute, Interface


class IBlobStore(Interface):
    """Raw RFC 5322 messages, written once and never rewritten.

    Backends load from the `emailsvc.blobstores` entry-point group and are
    built with `from_config(config, reactor)`.
    """

    def start():
        """Prepare the store (create directories, check the bucket). @return: Deferred."""

    def stop():
        """Release resources. @return: Deferred."""

    def put(data):
        """Store `data` (bytes) durably under a new key.

        @return: Deferred firing with the key (str) once the bytes are durable.
        """

    def get(key, offset=0, length=None):
        """Read bytes `[offset, offset+length)` of blob `key` (all when None).

        @return: Deferred firing with bytes; fails with BlobNotFound.
        """

    def delete(key):
        """Remove blob `key`; removing a missing blob is not an error.

        @return: Deferred.
        """

    def keys_older_than(timestamp):
        """All keys of blobs written before `timestamp` (seconds since epoch).

        @return: Deferred firing with a list of keys.
        """


class IDirectory(Interface):
    """Domains, users, aliases, credentials and quotas."""

    def add_domain(name):
        """Serve mail for `name`. @return: Deferred firing with the normalised name."""

    def remove_domain(name):
        """Stop serving `name`; fails with NotEmpty while users or aliases remain."""

    def list_domains():
        """@return: Deferred firing with the sorted domain names."""

    def add_user(address, password, quota=None):
        """Create a user. @return: Deferred firing with the new `User`."""

    def set_password(address, password):
        """Replace a user's password. @return: Deferred."""

    def set_quota(address, quota):
        """Set a user's quota in bytes (None: unlimited). @return: Deferred."""

    def get_user(address):
        """@return: Deferred firing with the `User` or None."""

    def get_user_by_id(user_id):
        """@return: Deferred firing with the `User` or None."""

    def list_users(domain=None):
        """@return: Deferred firing with `User`s sorted by address."""

    def remove_user(address):
        """Delete a user and their aliases as destination. @return: Deferred firing with the `User`."""

    def authenticate(address, password):
        """Check a password. @return: Deferred firing with the `User` or None."""

    def add_alias(source, destination):
        """Forward `source` (an address, or `@domain` for catch-all) to `destination`."""

    def remove_alias(source, destination=None):
        """Remove one destination of `source`, or all of them when None."""

    def list_aliases(domain=None):
        """@return: Deferred firing with `Alias`es sorted by source."""

    def resolve(address):
        """Local recipients of `address` after alias and catch-all expansion.

        @return: Deferred firing with a `Resolution`.
        """


class IMailStore(Interface):
    """Mailbox and message metadata for users (SQL)."""

    def provision_user(user_id):
        """Create the default mailboxes (INBOX and special-use) if missing. @return: Deferred."""

    def remove_user(user_id):
        """Delete all mailboxes and messages of a user. @return: Deferred."""

    def list_mailboxes(user_id):
        """@return: Deferred firing with `Mailbox`es sorted by name."""

    def get_mailbox(user_id, name):
        """@return: Deferred firing with the `Mailbox` or None."""

    def get_special_mailbox(user_id, special_use):
        """@return: Deferred firing with the mailbox having that special use (e.g. "\\\\Junk"), or None."""

    def usage(user_id):
        """@return: Deferred firing with the bytes stored in all of a user's mailboxes."""

    def delivery_mailbox(user_id, special_use=None):
        """The id of the mailbox with `special_use` (e.g. "\\Junk"), else of INBOX.

        A cheap lookup for delivery (no counts). @return: Deferred firing
        with the id, or None when the user has no INBOX.
        """

    def create_mailbox(user_id, name, special_use=None):
        """Create `name` and any missing parents. @return: Deferred firing with the `Mailbox`."""

    def rename_mailbox(user_id, old, new):
        """Rename a mailbox and its children; renaming INBOX moves its messages.

        @return: Deferred firing with the renamed `Mailbox`.
        """

    def delete_mailbox(user_id, name):
        """Delete a mailbox and its messages; its children stay.

        The name of a deleted mailbox that has children remains as a level of
        their hierarchy (IMAP lists it \\Noselect) until the last of them is
        deleted or renamed away.  @return: Deferred.
        """

    def set_subscribed(user_id, name, subscribed):
        """@return: Deferred."""

    def deliver(deliveries, content, internal_date=None):
        """Add one content, stored in the blob store under `content.blob_key`
        already, to many mailboxes atomically.

        @param deliveries: a list of (mailbox_id, flags) pairs.
        @param internal_date: seconds since the epoch; now when None.
        @return: Deferred firing with the list of `MessageRecord`s.
        """

    def list_messages(mailbox_id, uids=None):
        """@return: Deferred firing with `MessageRecord`s in UID order."""

    def get_content(content_id):
        """@return: Deferred firing with the `Content` or None."""

    def store_flags(mailbox_id, uids, flags, mode, unchanged_since=None):
        """Change flags. `mode` is "add", "remove" or "replace".

        @return: Deferred firing with (changed `MessageRecord`s, UIDs refused by unchanged_since).
        """

    def copy(mailbox_id, uids, target_id):
        """@return: Deferred firing with a dict source UID -> new UID."""

    def move(mailbox_id, uids, target_id):
        """Copy, then expunge from the source, atomically. @return: as copy."""

    def expunge(mailbox_id, uids=None):
        """Remove \\\\Deleted messages (only those in `uids`, when given).

        @return: Deferred firing with the sorted expunged UIDs.
        """

    def expunged_since(mailbox_id, modseq):
        """@return: Deferred firing with UIDs expunged with a MODSEQ above `modseq`."""

    def collect_garbage(blobs, grace):
        """Delete unreferenced contents, then blobs older than `grace` seconds
        that nothing references.  `blobs` is the InlineBlobStore, which
        ignores the keys of inline contents (their bytes went with them).

        @return: Deferred firing with the number of contents and orphan blobs removed.
        """

    notifier = Attribute(
        "An emailsvc.store.notify.Notifier: after each committed change it publishes the ids"
        " of the mailboxes whose messages changed (added, flagged, expunged) or that were deleted."
    )

    indexed_headers = Attribute(
        "Lower-case names of the header fields `search` can match (\"header\" criteria)."
    )

    def mailbox_changes(mailbox_id, since_modseq=0):
        """What changed in a mailbox after `since_modseq`, read in one snapshot.

        @return: Deferred firing with (`Mailbox`, `MessageRecord`s with a MODSEQ
            above `since_modseq` in UID order, UIDs expunged above it (none
            when `since_modseq` is 0)); fails with NotFound when the mailbox is gone.
        """

    def get_parsed(content_ids, fields=()):
        """Top-level fields of the parsed summaries of some contents.

        @return: Deferred firing with {content_id: (blob_key, {field: value or None})}.
        """

    def mailbox_index(mailbox_id):
        """A mailbox in compact form, read in one snapshot, for sessions on big mailboxes.

        @return: Deferred firing with (`Mailbox`, array('I') of its UIDs in
            order, the lowest UID without \\Seen or None, its keywords
            sorted); fails with NotFound when the mailbox is gone.
        """

    def message_page(mailbox_id, uids, fields=None):
        """The messages of a mailbox among `uids` (a page: hundreds, not the mailbox).

        @param fields: None for the records only, else parsed summary fields to add.
        @return: Deferred firing with [(`MessageRecord`, blob key or None,
            {field: value or None})] in UID order; UIDs not in the mailbox are left out.
        """

    def search_uids(mailbox_id, criteria):
        """Like `search` without sorting, as arrays (a result of any size stays compact).

        @return: Deferred firing with (array('I') of UIDs in order, array('Q')
            of their MODSEQs); fails with InvalidName on a malformed tree.
        """

    def search(mailbox_id, criteria, sort=None):
        """Messages of a mailbox matching a criteria tree (see emailsvc.store.sql.search).

        @param sort: None (UID order) or a list of (key, reverse) pairs.
        @return: Deferred firing with a list of (UID, MODSEQ); fails with
            InvalidName on a malformed tree.
        """

    def record_feedback(user_id, content_ids, verdict):
        """Remember that a user judged contents "spam" or "ham" (Junk moves). @return: Deferred."""

    def list_feedback(user_id):
        """@return: Deferred firing with the user's (content_id, verdict, time) in order."""


class IInlineMailStore(IMailStore):
    """A mail store that can also keep the bytes of small messages, committed
    with their rows (see emailsvc.store.inline); with any other, every
    message goes to the blob store."""

    def deliver(deliveries, content, internal_date=None, data=None):
        """As IMailStore.deliver; with `data`, the message's bytes are kept
        here, in the same transaction, under `content.blob_key`."""

    def read_inline(blob_key, offset=0, length=None):
        """Bytes `[offset, offset+length)` (all when None) of a message
        delivered with `data`. @return: Deferred; fails with BlobNotFound.
        """


class IMetadataBackend(Interface):
    """A SQL engine with the directory and mail store on it.

    Backends load from the `emailsvc.stores` entry-point group and are built
    with `from_config(config, reactor)`.
    """

    directory = Attribute("The IDirectory.")
    mail = Attribute("The IMailStore.")

    def start():
        """Connect and apply schema deltas. @return: Deferred."""

    def stop():
        """Finish pending writes and disconnect. @return: Deferred."""


class ISMTPSession(Interface):
    """One SMTP connection's view of policy and delivery.

    The ESMTP protocol calls these in order (connected, helo, then per
    transaction mail_from, rcpt_to..., data; reset on RSET/EHLO).  Each may
    return a Deferred; a failure with SMTPReplyError is sent to the client as
    its reply, any other failure as `451 4.3.0`.
    """

    def connected(peer_host, peer_port, tls):
        """A client connected (tls: implicit TLS). Refuse with SMTPReplyError."""

    def helo(name, extended):
        """HELO/EHLO `name` (str) was given."""

    def tls_started():
        """STARTTLS completed; the next command is a new EHLO."""

    def mail_from(sender, parameters):
        """MAIL FROM with `sender` (str, "" for the null sender) and ESMTP
        `parameters` (dict of upper-case keyword -> str or None)."""

    def rcpt_to(recipient, parameters):
        """RCPT TO; fires when the recipient is accepted."""

    def data(message):
        """The whole message (bytes, CRLF line ends, dot-unstuffed, without a
        trace header) for the accepted recipients.

        @return: Deferred firing with the text of the 250 reply (e.g. the
            queue id) once the message is durable.
        """

    def reset():
        """Forget the current transaction (RSET, new EHLO, or after DATA)."""

    def disconnected():
        """The connection closed; release anything held for it."""


class ICheck(Interface):
    """One check of the inbound pipeline, built-in or from a plugin.

    A check class is registered in the `emailsvc.checks` entry-point group
    and built with the class method `from_config(config, resolver,
    reactor)`.  For each stage named in `stages` it has a method of that
    name:

        connect(state)  helo(state)  mail(state)  rcpt(state, recipient)  data(state)

    `state` is the `SessionState`.  Each returns a `CheckResult`, a list of
    them, or None, directly, as a Deferred or as a coroutine.  A check
    never rejects: the configuration maps its results to actions.  Raising
    is reported as a temperror result of the check.

    A check may also have `requires`, a tuple of check names of the same
    stage whose results it reads from `state` (DMARC requires "dkim"); the
    pipeline starts it once those have finished.
    """

    name = Attribute("The check's name (str): its key in checks.enabled and checks.actions.")
    stages = Attribute('The stages it runs at, a tuple drawn from "connect", "helo", "mail", "rcpt", "data".')


class ISubmitter(Interface):
    """The avatar of a user authenticated on a submission listener (SMTP AUTH).

    The cred realm makes one per login; the submission session asks it which
    addresses the user may send as.
    """

    user = Attribute("The authenticated `User`.")

    def owns(address):
        """Whether the user may send as `address` (str): their own address,
        or an alias (not a catch-all) that delivers to them.

        @return: Deferred firing with a bool.
        """


class IQueue(Interface):
    """The outbound queue: messages for other domains, sent by a runner."""

    def enqueue(message, sender, recipients, envelope=None):
        """Queue `message` (bytes, CRLF line ends, trace fields included)
        from `sender` ("" for a bounce) for `recipients` (addresses at
        other domains).  `envelope` is a dict of envelope options
        ({"smtputf8": True}).

        @return: Deferred firing with the queue id once the message and its
            rows are durable.
        """
