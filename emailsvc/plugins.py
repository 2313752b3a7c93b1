"""Loading extensions from entry points, checked against their interface."""
from importlib.metadata import entry_points

from zope.interface.exceptions import Invalid
from zope.interface.verify import verifyClass

from emailsvc.interfaces import IBlobStore, ICheck, IMetadataBackend

GROUPS = {
    "emailsvc.stores": IMetadataBackend,
    "emailsvc.blobstores": IBlobStore,
    "emailsvc.checks": ICheck,
}


class PluginError(Exception):
    """An extension is missing or does not implement its interface."""


def names(group: str) -> list[str]:
    """Names available in an entry-point group, sorted."""
    return sorted(point.name for point in entry_points(group=group))


def load(group: str, name: str):
    """The class registered as `name` in `group`, verified against the group's interface."""
    found = entry_points(group=group, name=name)
    if not found:
        raise PluginError(f"no {group} plugin named {name!r} (installed: {', '.join(names(group)) or 'none'})")
    (point,) = tuple(found)[:1]
    try:
        cls = point.load()
    except Exception as error:
        raise PluginError(f"{group} plugin {name!r} failed to load: {error}") from error
    verify(group, cls, name)
    return cls


def verify(group: str, cls, name: str = "") -> None:
    """Raise PluginError unless `cls` implements the interface of `group`."""
    interface = GROUPS[group]
    label = name or getattr(cls, "__name__", repr(cls))
    if not interface.implementedBy(cls):
        raise PluginError(f"{group} plugin {label!r} does not implement {interface.__name__}")
    try:
        verifyClass(interface, cls)
    except Invalid as error:
        raise PluginError(f"{group} plugin {label!r}: {error}") from None
