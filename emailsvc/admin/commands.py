"""The store operations behind `emailsvc domain|user|alias ...`.

Each operation is a coroutine `operation(store, command, write)`: `store`
is a started StoreService, `command` the prepared Command (arguments are
already validated and normalised, see cli.prepare), and `write(line)`
prints one line of output.  Store errors (NotFound, AlreadyExists, ...)
propagate to the caller, which reports them.
"""
from __future__ import annotations

from emailsvc.addresses import normalize_domain
from emailsvc.errors import NotFound


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
