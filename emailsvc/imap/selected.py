"""Selected-state commands and the announcement of mailbox changes.

A mixin of `IMAPServer`.  After every command in the selected state the
server `sync()`s: it re-reads what other sessions and deliveries changed
(when the store's notifier said something did) and announces EXISTS,
flag changes and, where RFC 3501 allows, EXPUNGE (VANISHED with QRESYNC).
"""
from __future__ import annotations

from emailsvc.imap.fetch import parse_items, render_items
from emailsvc.imap.mailboxes import parse_flags
from emailsvc.imap.message import Message
from emailsvc.imap.search import SearchParser, check_charset, parse_charset, parse_sort_keys, resolve_headers
from emailsvc.imap.wire import Atom, Bad, No, flag_list, format_pairs_set, format_set, parse_number

CRLF = b"\r\n"
_BATCH = 100
_JUNK, _TRASH = "\\Junk", "\\Trash"


class SelectedCommands:
    """CLOSE, UNSELECT, EXPUNGE, SEARCH, SORT, FETCH, STORE, COPY, MOVE (and UID forms)."""

    # Updates

    async def sync(self, expunges: bool):
        """Announce what changed in the selected mailbox since the last sync."""
        view = self.view
        if view.dirty:
            update = await view.refresh()
            if self.view is not view or self.closed:
                return
            for uid in update.flags:
                seq = view.seq(uid)
                if seq is not None and uid not in view.gone:
                    self.untagged(self._flags_fetch(seq, view.records[uid], True))
            if update.new:
                self.untagged(b"%d EXISTS" % view.exists)
        if expunges and view.gone:
            self.announce_expunges()

    def announce_expunges(self):
        gone = self.view.take_expunged()
        if not gone:
            return
        if "QRESYNC" in self.enabled:
            self.untagged(b"VANISHED " + format_set(uid for _, uid in gone))
        else:
            for seq, _ in gone:
                self.untagged(b"%d EXPUNGE" % seq)

    def _flags_fetch(self, seq, record, with_uid) -> bytes:
        out = b"%d FETCH (FLAGS %s" % (seq, flag_list(record.flags))
        if with_uid:
            out += b" UID %d" % record.uid
        if "CONDSTORE" in self.enabled:
            out += b" MODSEQ (%d)" % record.modseq
        return out + b")"

    def _unselect(self):
        self.view.close()
        self.view = None
        self.state = "auth"

    # Leaving

    async def cmd_close(self, tag, args, uid):
        args.end()
        view = self.view
        if not view.readonly:
            await view.mail.expunge(view.id, list(view.uids))
        self._unselect()

    async def cmd_unselect(self, tag, args, uid):
        args.end()
        self._unselect()

    async def cmd_expunge(self, tag, args, uid):
        ranges = args.sequence_set() if uid else None
        args.end()
        view = self.view
        if view.readonly:
            raise No("Mailbox is read-only", "READ-ONLY")
        wanted = [u for _, u in view.resolve(ranges, True)] if uid else list(view.uids)
        expunged = await view.mail.expunge(view.id, wanted)
        view.mark_gone(expunged)
        if "CONDSTORE" in self.enabled and expunged:
            await self.sync(expunges=True)
            return f"HIGHESTMODSEQ {view.modseq}", "EXPUNGE completed"

    # Search

    async def _search_tree(self, args):
        tokens = args.tokens[args.index:]
        parser = SearchParser(tokens, self.view, self.clock.seconds())
        tree = parser.parse()
        if parser.uses_modseq:
            self.enabled.add("CONDSTORE")
        tree = await resolve_headers(tree, self.view, self.view.mail.indexed_headers)
        return tree, parser.uses_modseq

    def _visible(self, rows):
        view = self.view
        return [(u, modseq) for u, modseq in rows if u in view.records and u not in view.gone]

    async def cmd_search(self, tag, args, uid):
        if isinstance(args.peek(), Atom) and bytes(args.peek()).upper() == b"RETURN":
            raise Bad("ESEARCH is not supported")
        parse_charset(args)
        tree, modseq = await self._search_tree(args)
        rows = self._visible(await self.view.mail.search(self.view.id, tree))
        numbers = sorted(u if uid else self.view.seq(u) for u, _ in rows)
        line = b" ".join([b"SEARCH"] + [b"%d" % n for n in numbers])
        if modseq and rows:
            line += b" (MODSEQ %d)" % max(m for _, m in rows)
        self.untagged(line)

    async def cmd_sort(self, tag, args, uid):
        keys = parse_sort_keys(args.list("sort criteria"))
        check_charset(args.astring("charset"))
        tree, _ = await self._search_tree(args)
        rows = self._visible(await self.view.mail.search(self.view.id, tree, keys))
        self.untagged(b" ".join([b"SORT"] + [b"%d" % (u if uid else self.view.seq(u)) for u, _ in rows]))

    # Fetch

    async def cmd_fetch(self, tag, args, uid):
        view = self.view
        ranges = args.sequence_set()
        items = parse_items(args.next("fetch attributes"))
        changed_since, vanished = None, False
        if args.more():
            modifiers = args.list("fetch modifiers")
            position = 0
            while position < len(modifiers):
                word = bytes(modifiers[position]).upper() if isinstance(modifiers[position], Atom) else b""
                position += 1
                if word == b"CHANGEDSINCE" and position < len(modifiers) and isinstance(modifiers[position], Atom):
                    changed_since = parse_number(bytes(modifiers[position]), "mod-sequence", 2 ** 63)
                    position += 1
                elif word == b"VANISHED" and uid and "QRESYNC" in self.enabled:
                    vanished = True
                else:
                    raise Bad("Bad fetch modifier")
            if vanished and changed_since is None:
                raise Bad("VANISHED needs CHANGEDSINCE")
        args.end()
        if changed_since is not None or any(item.name == "MODSEQ" for item in items):
            self.enabled.add("CONDSTORE")
        pairs = [(seq, u) for seq, u in view.resolve(ranges, uid) if u not in view.gone]
        if vanished:
            gone = await view.mail.expunged_since(view.id, changed_since)
            wanted = {u for u in gone if any((low or 0) <= u <= (high or 2 ** 32)
                                              for low, high in ranges)}
            if wanted:
                self.untagged(b"VANISHED (EARLIER) " + format_set(wanted))
        if changed_since is not None:
            pairs = [(seq, u) for seq, u in pairs if view.records[u].modseq > changed_since]
        seen = set()
        if not view.readonly and any(item.sets_seen for item in items):
            unseen = [u for _, u in pairs if "\\Seen" not in view.records[u].flags]
            if unseen:
                changed, _ = await view.mail.store_flags(view.id, unseen, ["\\Seen"], "add")
                view.update_records(changed)
                seen = {record.uid for record in changed}
        needs = set().union(*(item.needs for item in items))
        fields = sorted(needs - {"blob"})
        streaming = "blob" in needs
        if streaming:
            self.transport.registerProducer(self, True)
        try:
            for start in range(0, len(pairs), _BATCH):
                batch = pairs[start:start + _BATCH]
                parsed = {}
                if needs:
                    parsed = await view.mail.get_parsed([view.records[u].content_id for _, u in batch], fields)
                for seq, u in batch:
                    record = view.records.get(u)
                    if record is None or self.closed or self.view is not view:
                        continue
                    blob_key, values = parsed.get(record.content_id, (None, {}))
                    message = Message(record, self.account.blobs, blob_key, values)
                    line = await render_items(message, items, seq, uid_first=uid,
                                              modseq="CONDSTORE" in self.enabled, flags_changed=u in seen)
                    self.write(line + CRLF)
                    await self.writable()
                if self.closed:
                    return
        finally:
            if streaming and not self.closed:
                self.transport.unregisterProducer()

    # Store

    async def cmd_store(self, tag, args, uid):
        view = self.view
        ranges = args.sequence_set()
        unchanged_since = None
        if isinstance(args.peek(), list):
            modifiers = args.list()
            if (len(modifiers) != 2 or not isinstance(modifiers[0], Atom)
                    or bytes(modifiers[0]).upper() != b"UNCHANGEDSINCE" or not isinstance(modifiers[1], Atom)):
                raise Bad("Bad STORE modifier")
            unchanged_since = parse_number(bytes(modifiers[1]), "mod-sequence", 2 ** 63)
            self.enabled.add("CONDSTORE")
        action = args.keyword("flags action")
        silent = action.endswith(".SILENT")
        mode = {"FLAGS": "replace", "+FLAGS": "add", "-FLAGS": "remove"}.get(action.removesuffix(".SILENT"))
        if mode is None:
            raise Bad("Expected FLAGS, +FLAGS or -FLAGS")
        tokens = args.list("flags") if isinstance(args.peek(), list) else args.tokens[args.index:]
        args.index = len(args.tokens)
        flags = parse_flags(tokens)
        if view.readonly:
            raise No("Mailbox is read-only", "READ-ONLY")
        pairs = [(seq, u) for seq, u in view.resolve(ranges, uid) if u not in view.gone]
        changed, refused = await view.mail.store_flags(view.id, [u for _, u in pairs], flags, mode, unchanged_since)
        view.update_records(changed)
        changed_uids = {record.uid for record in changed}
        refused = set(refused)
        condstore = "CONDSTORE" in self.enabled
        for seq, u in pairs:
            record = view.records.get(u)
            if record is None or u in refused:
                continue
            if not silent:
                self.untagged(self._flags_fetch(seq, record, uid))
            elif condstore and u in changed_uids:
                self.untagged(b"%d FETCH (%sMODSEQ (%d))" % (seq, b"UID %d " % u if uid else b"", record.modseq))
        if refused:
            numbers = [u if uid else seq for seq, u in pairs if u in refused]
            return "MODIFIED " + format_set(numbers).decode(), "Conditional STORE failed"

    # Copy and move

    async def cmd_copy(self, tag, args, uid):
        return await self._transfer(args, uid, move=False)

    async def cmd_move(self, tag, args, uid):
        return await self._transfer(args, uid, move=True)

    async def _transfer(self, args, uid, move):
        view = self.view
        ranges = args.sequence_set()
        name = args.mailbox()
        args.end()
        pairs = [(seq, u) for seq, u in view.resolve(ranges, uid) if u not in view.gone]
        target = await self.account.get(name)
        if target is None:
            raise No("No such mailbox", "TRYCREATE")
        if move and view.readonly:
            raise No("Mailbox is read-only", "READ-ONLY")
        verb = "MOVE" if move else "COPY"
        if not pairs:
            return f"{verb} completed (no messages)"
        uids = [u for _, u in pairs]
        contents = [view.records[u].content_id for u in uids]
        if move:
            mapping = await view.mail.move(view.id, uids, target.id)
        else:
            mapping = await view.mail.copy(view.id, uids, target.id)
        await self._record_feedback(view.info.special_use, target.special_use, contents)
        code = None
        if mapping:
            code = (f"COPYUID {target.uidvalidity} {format_pairs_set(mapping.keys()).decode()}"
                    f" {format_pairs_set(mapping.values()).decode()}")
        if not move:
            return code, "COPY completed"
        if code:
            self.untagged(b"OK [" + code.encode() + b"] Moved")
        view.mark_gone(mapping.keys())
        self.announce_expunges()
        return "MOVE completed"

    async def _record_feedback(self, source_use, target_use, contents):
        """Moves into Junk train as spam, out of Junk (not to Trash) as ham."""
        verdict = None
        if target_use == _JUNK and source_use != _JUNK:
            verdict = "spam"
        elif source_use == _JUNK and target_use not in (_JUNK, _TRASH):
            verdict = "ham"
        if verdict is not None:
            try:
                await self.account.store.record_feedback(self.account.user_id, contents, verdict)
            except Exception:
                self.log.failure("Recording {verdict} feedback failed", verdict=verdict)
