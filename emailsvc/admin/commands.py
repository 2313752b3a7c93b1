"""The store operations behind `emailsvc domain|user|alias|queue ...`.

Each operation is a coroutine `operation(store, command, write)`: `store`
is a started StoreService, `command` the prepared Command (arguments are
already validated and normalised, see cli.prepare), and `write(line)`
prints one line of output.  Store errors (NotFound, AlreadyExists, ...)
propagate to the caller, which reports them.
"""
from __future__ import annotations

import time

from emailsvc.addresses import normalize_domain
from emailsvc.errors import NotFound, StoreError


def format_quota(quota: int | None) -> str:
    return "unlimited" if quota is None else str(quota)


async def _require_domain(store, domain: str):
    """Listing an unknown domain is an error rather than an empty answer."""
    if domain not in await store.metadata.directory.list_domains():
        raise NotFound(f"no such domain: {domain}")


# Domains


async def domain_add(store, command, write):
    name = await store.metadata.directory.add_domain(command.args.name)
    write(f"domain {name} added")


async def domain_list(store, command, write):
    for name in await store.metadata.directory.list_domains():
        write(name)


async def domain_remove(store, command, write):
    await store.metadata.directory.remove_domain(command.args.name)
    write(f"domain {normalize_domain(command.args.name)} removed")


# Users


async def user_add(store, command, write):
    args = command.args
    user = await store.metadata.directory.add_user(args.address, command.password, args.quota)
    await store.metadata.mail.provision_user(user.id)
    write(f"user {user.address} added (quota {format_quota(user.quota)})")


async def user_passwd(store, command, write):
    await store.metadata.directory.set_password(command.args.address, command.password)
    write(f"password of {command.args.address} changed")


async def user_quota(store, command, write):
    args = command.args
    await store.metadata.directory.set_quota(args.address, args.bytes)
    write(f"quota of {args.address} set to {format_quota(args.bytes)}")


async def user_list(store, command, write):
    domain = command.args.domain
    if domain is not None:
        await _require_domain(store, domain)
    for user in await store.metadata.directory.list_users(domain):
        write(f"{user.address}  {format_quota(user.quota)}")


async def user_remove(store, command, write):
    # The directory entry goes first: once it is gone nothing delivers to
    # the user any more, then the mailboxes go (blobs are collected later).
    user = await store.metadata.directory.remove_user(command.args.address)
    await store.metadata.mail.remove_user(user.id)
    write(f"user {user.address} removed")


# Aliases


async def alias_add(store, command, write):
    args = command.args
    alias = await store.metadata.directory.add_alias(args.source, args.destination)
    write(f"alias {alias.source} -> {alias.destination} added")


async def alias_list(store, command, write):
    domain = command.args.domain
    if domain is not None:
        await _require_domain(store, domain)
    for alias in await store.metadata.directory.list_aliases(domain):
        write(f"{alias.source} -> {alias.destination}")


async def alias_remove(store, command, write):
    args = command.args
    await store.metadata.directory.remove_alias(args.source, args.destination)
    if args.destination is None:
        write(f"alias {args.source} removed")
    else:
        write(f"alias {args.source} -> {args.destination} removed")


# The outbound queue


def _queue(store):
    from emailsvc.store.sql.queue import SQLQueueStore

    if not hasattr(store.metadata, "db"):
        raise StoreError("this metadata store has no outbound queue")
    return SQLQueueStore(store.metadata.db)


def _utc(seconds: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(seconds))


async def queue_list(store, command, write):
    for row in await _queue(store).recipients():
        due = _utc(row.next_attempt) if row.status == "pending" else "-"
        write("  ".join((row.queue_id, row.sender or "<>", row.recipient, row.status, str(row.attempts), due,
                         row.last_reply or "-")))


async def queue_retry(store, command, write):
    args = command.args
    count = await _queue(store).retry(None if args.all else args.queue_ids, int(time.time()))
    write(f"{count} pending recipient(s) due now")


async def queue_delete(store, command, write):
    ids = list(dict.fromkeys(command.args.queue_ids))
    count = await _queue(store).delete(ids)
    write(f"{len(ids)} message(s) deleted with {count} recipient(s), senders not notified")


# DKIM keys (local: files under the configured key directory, no store)


def dkim_generate(command, io) -> int:
    """`dkim generate DOMAIN`: write a new signing key, print the DNS record."""
    import os
    import time

    from emailsvc.config import ConfigError, load
    from emailsvc.delivery import dkim_sign
    from emailsvc.errors import InvalidName

    args = command.args
    try:
        config = load(args.config)
    except ConfigError as error:
        io.stderr.write(error.render() + "\n")
        return 1
    try:
        domain = normalize_domain(args.domain)
    except InvalidName as error:
        io.error(str(error))
        return 1
    key_dir = config.dkim.key_dir or os.path.join(config.server.data_dir, "dkim")
    selector = args.selector or f"{args.algorithm}-{time.strftime('%Y%m%d', time.gmtime())}"
    try:
        dkim_sign.check_selector(selector)
        key = dkim_sign.generate_key(args.algorithm, args.bits)
        path, record = dkim_sign.write_key(key_dir, domain, selector, key)
    except dkim_sign.DKIMKeyError as error:
        io.error(str(error))
        return 1
    except OSError as error:
        io.error(f"cannot write the key under {key_dir}: {error.strerror}")
        return 1
    io.stdout.write(f"{args.algorithm} key for {domain}, selector {selector}, written to {path}\n")
    io.stdout.write("Publish this TXT record, then mail from the domain is signed with it:\n")
    io.stdout.write(dkim_sign.zone_line(selector, domain, record) + "\n")
    if not config.dkim.enabled:
        io.stdout.write("Note: signing is off (dkim.enabled = false).\n")
    return 0
