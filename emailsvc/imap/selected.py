"""Selected-state commands and the announcement of mailbox changes.

A mixin of `IMAPServer`.  After every command in the selected state the
server `sync()`s: it re-reads what other sessions and deliveries changed
(when the store's notifier said something did) and announces EXISTS,
flag changes and, where RFC 3501 allows, EXPUNGE (VANISHED with QRESYNC).
"""
from __future__ import annotations

from itertools import islice

from emailsvc.imap.fetch import Renderer, parse_items, read_sections
from emailsvc.imap.mailboxes import parse_flags
from emailsvc.imap.message import Message
from emailsvc.imap.search import SearchParser, check_charset, parse_charset, parse_sort_keys, resolve_headers
from emailsvc.imap.wire import Atom, Bad, No, flag_list, format_pairs_set, format_set, parse_number

CRLF = b"\r\n"
_BATCH = 100
"""Messages a page when FETCH reads message bytes."""
_PAGE = 500
"""Messages a page otherwise (records and parsed fields only)."""
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
                    self.untagged(self._flags_fetch(seq, update.records[uid], True))
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
            await view.mail.expunge(view.id, view.uids)
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
        wanted = [u for _, u in view.pairs(view.spans(ranges, True))] if uid else view.uids
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
        return [(u, modseq) for u, modseq in rows if u not in view.gone and view.seq(u) is not None]

    async def cmd_search(self, tag, args, uid):
        if isinstance(args.peek(), Atom) and bytes(args.peek()).upper() == b"RETURN":
            raise Bad("ESEARCH is not supported")
        parse_charset(args)
        tree, modseq = await self._search_tree(args)
        view = self.view
        uids, modseqs = await view.mail.search_uids(view.id, tree)
        if self.closed or self.view is not view:
            return
        # UID order is sequence order: the numbers come out sorted, a page at a time.
        highest, chunk = 0, [b"* SEARCH"]
        for index, u in enumerate(uids):
            if u in view.gone:
                continue
            seq = view.seq(u)
            if seq is None:
                continue
            chunk.append(b"%d" % (u if uid else seq))
            highest = max(highest, modseqs[index])
            if len(chunk) >= 2000:
                self.write(b" ".join(chunk))
                chunk = [b""]
        if modseq and highest:
            chunk.append(b"(MODSEQ %d)" % highest)
        self.write(b" ".join(chunk) + CRLF)

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
        spans = view.spans(ranges, uid)
        if vanished:
            gone = await view.mail.expunged_since(view.id, changed_since)
            wanted = {u for u in gone if any((low or 0) <= u <= (high or 2 ** 32)
                                              for low, high in ranges)}
            if wanted:
                self.untagged(b"VANISHED (EARLIER) " + format_set(wanted))
        needs = set().union(*(item.needs for item in items))
        fields = sorted(needs - {"blob"}) if needs else None
        renderer = Renderer(items, uid_first=uid, modseq="CONDSTORE" in self.enabled)
        streaming = renderer.literals  # the items with literals are those that read message bytes
        sets_seen = not view.readonly and any(item.sets_seen for item in items)
        # Messages expunged by others but still numbered here are answered
        # too, from what the session knows (see Renderer.expunged_line).
        pairs = view.pairs(spans, with_gone=True)
        # The transport tells (pauseProducing) when its buffer is full: FETCH
        # waits instead of buffering the whole answer.
        self.transport.registerProducer(self, True)
        try:
            while True:
                # One page of records (and parsed fields) at a time: memory
                # does not grow with the mailbox or the set.
                page = list(islice(pairs, _BATCH if streaming else _PAGE))
                if not page:
                    break
                rows = await view.mail.message_page(view.id, [u for _, u in page], fields)
                if self.closed or self.view is not view:
                    return
                found = {record.uid: (record, blob_key, values) for record, blob_key, values in rows}
                if changed_since is not None:
                    page = [(seq, u) for seq, u in page if u in found and found[u][0].modseq > changed_since]
                seen = set()
                if sets_seen:
                    unseen = [u for _, u in page if u in found and "\\Seen" not in found[u][0].flags]
                    if unseen:
                        changed, _ = await view.mail.store_flags(view.id, unseen, ["\\Seen"], "add")
                        view.update_records(changed)
                        for record in changed:
                            found[record.uid] = (record,) + found[record.uid][1:]
                            seen.add(record.uid)
                # Without message bytes a page is rendered at once and written in one piece.
                lines = []
                for seq, u in page:
                    if u not in found:
                        # Expunged by another session, not announced yet: the
                        # session knows only its UID, the rest is NIL (RFC 2180 4.1.3).
                        lines.append(renderer.expunged_line(seq, u))
                        continue
                    record, blob_key, values = found[u]
                    if not streaming:
                        lines.append(renderer.line(record, values, seq, flags_changed=u in seen))
                        continue
                    sections = await read_sections(Message(record, self.account.blobs, blob_key, values), items)
                    if self.closed or self.view is not view:
                        return
                    lines.append(renderer.line(record, values, seq, flags_changed=u in seen, sections=sections))
                    self.write(b"".join(lines))
                    lines = []
                    await self.writable()
                if lines:
                    self.write(b"".join(lines))
                if not streaming:
                    await self.writable()
                if self.closed:
                    return
        finally:
            if not self.closed:
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
        pairs = list(view.pairs(view.spans(ranges, uid)))
        changed, refused = await view.mail.store_flags(view.id, [u for _, u in pairs], flags, mode, unchanged_since)
        view.update_records(changed)
        records = {record.uid: record for record in changed}
        refused = set(refused)
        condstore = "CONDSTORE" in self.enabled
        if not silent:
            # Unchanged messages are reported too, with their current flags.
            records.update(await view.records(u for _, u in pairs if u not in records and u not in refused))
        changed_uids = {record.uid for record in changed}
        for seq, u in pairs:
            record = records.get(u)
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
        pairs = list(view.pairs(view.spans(ranges, uid)))
        target = await self.account.get(name)
        if target is None:
            raise No("No such mailbox", "TRYCREATE")
        if move and view.readonly:
            raise No("Mailbox is read-only", "READ-ONLY")
        verb = "MOVE" if move else "COPY"
        if not pairs:
            return f"{verb} completed (no messages)"
        uids = [u for _, u in pairs]
        verdict = feedback_verdict(view.info.special_use, target.special_use)
        contents = []
        if verdict is not None:
            contents = [record.content_id for record in (await view.records(uids)).values()]
        if move:
            mapping = await view.mail.move(view.id, uids, target.id)
        else:
            mapping = await view.mail.copy(view.id, uids, target.id)
        if verdict is not None:
            await self._record_feedback(verdict, contents)
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

    async def _record_feedback(self, verdict, contents):
        try:
            await self.account.store.record_feedback(self.account.user_id, contents, verdict)
        except Exception:
            self.log.failure("Recording {verdict} feedback failed", verdict=verdict)


def feedback_verdict(source_use, target_use):
    """Moves into Junk train as spam, out of Junk (not to Trash) as ham; else None."""
    if target_use == _JUNK and source_use != _JUNK:
        return "spam"
    if source_use == _JUNK and target_use not in (_JUNK, _TRASH):
        return "ham"
    return None
