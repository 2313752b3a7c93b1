"""twisted.cred checking of user names and passwords against the directory."""
from __future__ import annotations

from twisted.cred import credentials, error
from twisted.cred.checkers import ICredentialsChecker
from twisted.internet import defer, task
from zope.interface import implementer


@implementer(ICredentialsChecker)
class DirectoryChecker:
    """Checks IUsernamePassword against IDirectory; the avatar id is the user id.

    `address` identifies the client for throttling; protocols make one
    checker per connection with `for_client(address)`.
    """

    credentialInterfaces = (credentials.IUsernamePassword,)

    def __init__(self, directory, throttle, clock, address: str = ""):
        self._directory = directory
        self._throttle = throttle
        self._clock = clock
        self._address = address

    def for_client(self, address: str) -> "DirectoryChecker":
        return DirectoryChecker(self._directory, self._throttle, self._clock, address)

    @defer.inlineCallbacks
    def requestAvatarId(self, creds):
        username = creds.username.decode("utf-8", "replace") if isinstance(creds.username, bytes) else creds.username
        password = creds.password.decode("utf-8", "replace") if isinstance(creds.password, bytes) else creds.password
        if self._throttle.locked(self._address, username):
            raise error.UnauthorizedLogin("Too many failures, try again later")
        user = yield self._directory.authenticate(username, password)
        if user is None:
            delay = self._throttle.failed(self._address, username)
            if delay:
                yield task.deferLater(self._clock, delay, lambda: None)
            raise error.UnauthorizedLogin("Authentication failed")
        self._throttle.succeeded(self._address, username)
        return user.id
