"""twistd entry: `twistd -n emailsvc --config FILE`."""
import sys

from twisted.python import usage

from emailsvc.config import ConfigError, load


class Options(usage.Options):
    optParameters = [["config", "c", "etc/emailsvc.toml", "The configuration file (TOML)."]]

    def postOptions(self):
        # A broken configuration ends the process here, before anything binds.
        try:
            self.loaded = load(self["config"])
        except ConfigError as error:
            sys.stderr.write(error.render() + "\n")
            raise SystemExit(1)


def makeService(options):
    """Build the root service from the loaded configuration."""
    from twisted.internet import reactor

    from emailsvc.service import build, freeze_startup_objects

    root = build(options.loaded, reactor)
    freeze_startup_objects()
    return root
