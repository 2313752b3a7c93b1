"""Building the configured checks: built-ins and third-party plugins alike.

Every check, built-in or not, is a class in the `emailsvc.checks`
entry-point group (emailsvc's own are registered in setup.cfg), so a plugin
is enabled, configured and run exactly like a built-in.
"""
from __future__ import annotations

from emailsvc import plugins
from emailsvc.checks.model import STAGES
from emailsvc.checks.runner import CheckPipeline, actions_table
from emailsvc.config import ConfigError, Problem

GROUP = "emailsvc.checks"


class CheckLoadError(Exception):
    """A check cannot be found, imported or does not provide ICheck."""


def available() -> list[str]:
    """Names of every installed check."""
    return plugins.names(GROUP)


def check_class(name: str):
    """The class of the check called `name`, verified; raises CheckLoadError."""
    try:
        cls = plugins.load(GROUP, name)
    except plugins.PluginError as error:
        raise CheckLoadError(str(error)) from None
    verify_check_class(cls, name)
    return cls


def verify_check_class(cls, name: str = "") -> None:
    """Raise CheckLoadError unless `cls` is a usable ICheck class."""
    label = name or getattr(cls, "__name__", repr(cls))
    try:
        plugins.verify(GROUP, cls)
    except plugins.PluginError as error:
        raise CheckLoadError(f"check {label!r}: {error}") from None
    stages = getattr(cls, "stages", None)
    if not isinstance(stages, (tuple, list)) or not stages:
        raise CheckLoadError(f"check {label!r} has no stages")
    for stage in stages:
        if stage not in STAGES:
            raise CheckLoadError(f"check {label!r} has an unknown stage {stage!r}")
        if not callable(getattr(cls, stage, None)):
            raise CheckLoadError(f"check {label!r} runs at {stage!r} but has no {stage}() method")
    if not callable(getattr(cls, "from_config", None)):
        raise CheckLoadError(f"check {label!r} has no from_config(config, resolver, reactor)")


def load_checks(config, resolver, reactor) -> list:
    """Build the checks named in `config.checks.enabled`, in that order.

    Raises ConfigError naming every enabled entry that cannot be built.
    """
    checks, problems = [], []
    for index, name in enumerate(config.checks.enabled):
        key = f"checks.enabled[{index}]"
        try:
            check = check_class(name).from_config(config, resolver, reactor)
        except CheckLoadError as error:
            problems.append(Problem(key, str(error)))
            continue
        except (ValueError, TypeError) as error:
            problems.append(Problem(key, f"check {name!r}: {error}"))
            continue
        if check.name != name:
            problems.append(Problem(key, f"check {name!r} calls itself {check.name!r}"))
            continue
        checks.append(check)
    if problems:
        raise ConfigError(config.path or "configuration", problems)
    return checks


def actions_from_config(config) -> dict[str, dict[str, str]]:
    """checks.actions plus each DNSBL zone's own action (as outcome "listed:<zone>")."""
    actions = actions_table(config.checks.actions)
    for zone in config.checks.dnsbl.zones:
        if zone.action:
            actions.setdefault("dnsbl", {})[f"listed:{zone.zone.lower().rstrip('.')}"] = zone.action
    return actions


def authserv_id(config) -> str:
    """Our authserv-id: checks.authserv_id, else server.hostname."""
    return config.checks.authserv_id or config.server.hostname


def build_pipeline(config, resolver, reactor) -> CheckPipeline:
    """The CheckPipeline for `config`: checks, actions, authserv-id and timeout."""
    return CheckPipeline(
        load_checks(config, resolver, reactor),
        actions_from_config(config),
        authserv_id(config),
        clock=reactor,
        timeout=config.checks.timeout,
    )
