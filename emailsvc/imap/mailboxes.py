"""Authenticated-state commands: mailboxes, listing, status, append, quota.

A mixin of `IMAPServer`; each `cmd_*` is a coroutine returning the text of
the tagged OK (or (code, text)) and raising `Bad`/`No` otherwise.
"""
from __future__ import annotations

from emailsvc.imap import utf7
from emailsvc.imap.append import parse_date_time, store_message
from emailsvc.imap.wire import Atom, Bad, No, String, decode_mailbox, mailbox_name, parse_number

SYSTEM_FLAGS = {"\\seen": "\\Seen", "\\answered": "\\Answered", "\\flagged": "\\Flagged",
                "\\deleted": "\\Deleted", "\\draft": "\\Draft"}
_KEYWORD_FORBIDDEN = set('(){%*"\\]')
STATUS_ITEMS = ("MESSAGES", "RECENT", "UIDNEXT", "UIDVALIDITY", "UNSEEN", "HIGHESTMODSEQ", "SIZE", "APPENDLIMIT")
SPECIAL_USES = ("\\All", "\\Archive", "\\Drafts", "\\Flagged", "\\Junk", "\\Sent", "\\Trash")


def parse_flags(tokens) -> list[str]:
    """Flag atoms -> flag names; \\Recent and unknown system flags are refused."""
    flags = []
    for token in tokens:
        if not isinstance(token, Atom):
            raise Bad("Flags are atoms")
        text = bytes(token).decode("ascii", "replace")
        if text.startswith("\\"):
            if text.lower() not in SYSTEM_FLAGS:
                raise Bad(f"Unknown system flag {text[:40]}")
            flags.append(SYSTEM_FLAGS[text.lower()])
        elif not text or any(c in _KEYWORD_FORBIDDEN or not 0x21 <= ord(c) <= 0x7E for c in text) or len(text) > 128:
            raise Bad("Invalid keyword")
        else:
            flags.append(text)
    return flags


class MailboxCommands:
    """LIST, LSUB, CREATE, DELETE, RENAME, (UN)SUBSCRIBE, SELECT, EXAMINE, STATUS, APPEND, quota."""

    # Selection

    async def cmd_select(self, tag, args, uid):
        return await self._select(args, readonly=False)

    async def cmd_examine(self, tag, args, uid):
        return await self._select(args, readonly=True)

    async def _select(self, args, readonly):
        name = args.mailbox()
        qresync = None
        if args.more():
            parameters = args.list("select parameters")
            qresync = self._select_parameters(parameters)
        args.end()
        if self.view is not None:
            self.view.close()
            self.view = None
            self.state = "auth"
            if "QRESYNC" in self.enabled:
                self.untagged(b"OK [CLOSED] Previous mailbox closed")
        view = await self.account.select(name, rw=not readonly)
        if view is None:
            raise No("No such mailbox", "NONEXISTENT")
        self.view, self.state = view, "select"
        info = view.info
        flags = " ".join(view.getFlags()).encode("ascii", "replace")
        self.untagged(b"FLAGS (" + flags + b")")
        permanent = b"" if readonly else flags + b" \\*"
        self.untagged(b"OK [PERMANENTFLAGS (" + permanent + b")] Flags permitted")
        self.untagged(b"%d EXISTS" % view.exists)
        self.untagged(b"0 RECENT")
        unseen = None if view.first_unseen is None else view.seq(view.first_unseen)
        if unseen is not None:
            self.untagged(b"OK [UNSEEN %d] First unseen" % unseen)
        self.untagged(b"OK [UIDVALIDITY %d] UIDs valid" % info.uidvalidity)
        self.untagged(b"OK [UIDNEXT %d] Predicted next UID" % info.uidnext)
        self.untagged(b"OK [HIGHESTMODSEQ %d] Highest" % view.modseq)
        if qresync is not None:
            await self._qresync(view, *qresync)
        return ("READ-ONLY" if readonly else "READ-WRITE"), ("EXAMINE" if readonly else "SELECT") + " completed"

    def _select_parameters(self, parameters):
        qresync = None
        position = 0
        while position < len(parameters):
            word = parameters[position]
            name = bytes(word).upper() if isinstance(word, Atom) else b""
            position += 1
            if name == b"CONDSTORE":
                self.enabled.add("CONDSTORE")
            elif name == b"QRESYNC" and "QRESYNC" in self.enabled:
                if position >= len(parameters) or not isinstance(parameters[position], list):
                    raise Bad("QRESYNC needs parameters")
                values = parameters[position]
                position += 1
                if len(values) < 2 or not all(isinstance(v, Atom) for v in values[:2]):
                    raise Bad("Bad QRESYNC parameters")
                uidvalidity = parse_number(bytes(values[0]), "UIDVALIDITY")
                modseq = parse_number(bytes(values[1]), "mod-sequence", 2 ** 63)
                known = None
                if len(values) > 2 and isinstance(values[2], Atom):
                    from emailsvc.imap.wire import parse_sequence_set
                    known = parse_sequence_set(bytes(values[2]))
                qresync = (uidvalidity, modseq, known)
            else:
                raise Bad("Unknown select parameter")
        return qresync

    async def _qresync(self, view, uidvalidity, modseq, known):
        if uidvalidity != view.info.uidvalidity or modseq >= view.modseq:
            return
        from emailsvc.imap.wire import format_set

        gone = await view.mail.expunged_since(view.id, modseq)
        if known is not None:
            wanted = set()
            for low, high in known:
                wanted.update(u for u in gone if (low or 0) <= u <= (high or 2 ** 32))
            gone = sorted(wanted)
        if gone:
            self.untagged(b"VANISHED (EARLIER) " + format_set(gone))
        _, changed, _ = await view.mail.mailbox_changes(view.id, modseq)
        for record in changed:
            seq, uid = view.seq(record.uid), record.uid
            if seq is not None and record.modseq <= view.modseq:
                self.untagged(b"%d FETCH (UID %d FLAGS (%s) MODSEQ (%d))" % (
                    seq, uid, " ".join(sorted(record.flags)).encode("ascii", "replace"), record.modseq))

    # Mailbox life cycle

    async def cmd_create(self, tag, args, uid):
        raw = args.astring("mailbox name")
        use = None
        if args.more():
            options = args.list("create parameters")
            if (len(options) != 2 or not isinstance(options[0], Atom) or bytes(options[0]).upper() != b"USE"
                    or not isinstance(options[1], list) or len(options[1]) != 1):
                raise Bad("Bad CREATE parameters")
            word = bytes(options[1][0]).decode("ascii", "replace").lower()
            use = next((known for known in SPECIAL_USES if known.lower() == word), None)
            if use is None:
                raise No("Unsupported special use", "USEATTR")
        args.end()
        name = decode_mailbox(raw.rstrip(b"/"))
        if name == "INBOX":
            raise No("INBOX exists already", "ALREADYEXISTS")
        await self.account.store.create_mailbox(self.account.user_id, name, use)

    async def cmd_delete(self, tag, args, uid):
        name = args.mailbox()
        args.end()
        await self.account.delete(name)

    async def cmd_rename(self, tag, args, uid):
        old, new = args.mailbox(), args.mailbox()
        args.end()
        await self.account.rename(old, new.rstrip("/"))

    async def cmd_subscribe(self, tag, args, uid):
        name = args.mailbox()
        args.end()
        await self.account.subscribe(name)

    async def cmd_unsubscribe(self, tag, args, uid):
        name = args.mailbox()
        args.end()
        await self.account.unsubscribe(name)

    # Listing

    async def cmd_list(self, tag, args, uid):
        selection = set()
        if isinstance(args.peek(), list):
            selection = {_word(token) for token in args.list()}
            if not selection <= {"SUBSCRIBED", "REMOTE", "RECURSIVEMATCH", "SPECIAL-USE"}:
                raise Bad("Unknown LIST selection option")
            if selection == {"RECURSIVEMATCH"} or selection == {"RECURSIVEMATCH", "REMOTE"}:
                raise Bad("RECURSIVEMATCH needs another selection option")
        reference = _pattern_text(args.astring("reference"))
        token = args.next("mailbox pattern")
        patterns = [_pattern_text(bytes(item)) for item in token] if isinstance(token, list) else [_pattern_text(bytes(token))]
        returns, status_items = set(), []
        if args.more():
            if _word(args.next()) != "RETURN":
                raise Bad("Expected RETURN")
            options = args.list("return options")
            position = 0
            while position < len(options):
                word = _word(options[position])
                position += 1
                if word == "STATUS":
                    if position >= len(options) or not isinstance(options[position], list):
                        raise Bad("STATUS needs a list of items")
                    status_items = _status_items(options[position])
                    position += 1
                elif word in ("SUBSCRIBED", "CHILDREN", "SPECIAL-USE"):
                    returns.add(word)
                else:
                    raise Bad("Unknown LIST return option")
        args.end()
        if patterns == [""]:
            self.untagged(b'LIST (\\Noselect) "/" ""')
            return "LIST completed"
        names = [reference + pattern for pattern in patterns]
        infos = await self.account.mailboxes(names)
        everything = await self.account.mailboxes(["*"]) if "RECURSIVEMATCH" in selection else []
        show_subscribed = "SUBSCRIBED" in selection or "SUBSCRIBED" in returns
        for info in infos:
            box = info.mailbox
            child_info = b""
            if "SPECIAL-USE" in selection and not box.special_use:
                continue
            if "SUBSCRIBED" in selection and not box.subscribed:
                if "RECURSIVEMATCH" in selection and any(
                        other.mailbox.subscribed and other.name.startswith(box.name + "/") for other in everything):
                    child_info = b' ("CHILDINFO" ("SUBSCRIBED"))'
                else:
                    continue
            attributes = info.getFlags()
            if show_subscribed and box.subscribed:
                attributes.append("\\Subscribed")
            self.untagged(b"LIST (" + " ".join(attributes).encode("ascii") + b') "/" '
                          + mailbox_name(box.name) + child_info)
            if status_items and not child_info and not info.noselect:
                self.untagged(self._status_line(box, status_items))
        return "LIST completed"

    async def cmd_lsub(self, tag, args, uid):
        reference = _pattern_text(args.astring("reference"))
        pattern = _pattern_text(args.astring("mailbox pattern"))
        args.end()
        for info in await self.account.mailboxes([reference + pattern], subscribed_only=True):
            self.untagged(b"LSUB () \"/\" " + mailbox_name(info.name))
        return "LSUB completed"

    # Status

    async def cmd_status(self, tag, args, uid):
        name = args.mailbox()
        items = _status_items(args.list("status items"))
        args.end()
        box = await self.account.get(name)
        if box is None:
            raise No("No such mailbox", "NONEXISTENT")
        if "HIGHESTMODSEQ" in items:
            self.enabled.add("CONDSTORE")
        self.untagged(self._status_line(box, items))

    def _status_line(self, box, items) -> bytes:
        values = {"MESSAGES": box.messages, "RECENT": 0, "UIDNEXT": box.uidnext, "UIDVALIDITY": box.uidvalidity,
                  "UNSEEN": box.unseen, "HIGHESTMODSEQ": box.highestmodseq, "SIZE": box.size,
                  "APPENDLIMIT": self.factory.max_message_size}
        pairs = b" ".join(b"%s %d" % (item.encode(), values[item]) for item in items)
        return b"STATUS " + mailbox_name(box.name) + b" (" + pairs + b")"

    # Append

    async def cmd_append(self, tag, args, uid):
        name = args.mailbox()
        flags, date = [], None
        if isinstance(args.peek(), list):
            flags = parse_flags(args.list("flags"))
        token = args.next("message")
        if isinstance(token, String) and args.more():
            date = parse_date_time(bytes(token))
            token = args.next("message")
        args.end()
        if not isinstance(token, String):
            raise Bad("Expected the message as a literal")
        message = bytes(token)
        if not message:
            raise No("Empty message")
        if len(message) > self.factory.max_message_size:
            raise No("Message too large", "TOOBIG")
        box = await self.account.get(name)
        if box is None:
            raise No("No such mailbox", "TRYCREATE")
        quota = self.account.user.quota
        if quota is not None and (await self.account.usage()) + len(message) > quota:
            raise No("Quota exceeded", "OVERQUOTA")
        record = await store_message(self.account, box.id, message, flags, date)
        return f"APPENDUID {box.uidvalidity} {record.uid}", "APPEND completed"

    # Quota (RFC 9208): one root, "", per user, STORAGE only.

    async def cmd_getquotaroot(self, tag, args, uid):
        name = args.mailbox()
        args.end()
        if await self.account.get(name) is None:
            raise No("No such mailbox", "NONEXISTENT")
        if self.account.user.quota is None:
            self.untagged(b"QUOTAROOT " + mailbox_name(name))
            return "GETQUOTAROOT completed"
        self.untagged(b"QUOTAROOT " + mailbox_name(name) + b' ""')
        await self._quota_line()

    async def cmd_getquota(self, tag, args, uid):
        root = args.astring("quota root")
        args.end()
        if root != b"" or self.account.user.quota is None:
            raise No("No such quota root", "NONEXISTENT")
        await self._quota_line()

    async def cmd_setquota(self, tag, args, uid):
        raise No("Quotas are set by the administrator", "NOPERM")

    async def _quota_line(self):
        used = await self.account.usage()
        limit = self.account.user.quota
        self.untagged(b'QUOTA "" (STORAGE %d %d)' % ((used + 1023) // 1024, limit // 1024))


def _word(token) -> str:
    return bytes(token).upper().decode("ascii", "replace") if isinstance(token, Atom) else ""


def _pattern_text(raw: bytes) -> str:
    try:
        return utf7.decode(raw)
    except ValueError as error:
        raise Bad(f"Invalid mailbox pattern: {error}") from None


def _status_items(tokens) -> list[str]:
    items = []
    for token in tokens:
        word = _word(token)
        if word not in STATUS_ITEMS:
            raise Bad("Unknown status item")
        if word not in items:
            items.append(word)
    if not items:
        raise Bad("Missing status items")
    return items
