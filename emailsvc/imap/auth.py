"""Not-authenticated commands: STARTTLS, LOGIN, AUTHENTICATE PLAIN (RFC 4616, SASL-IR).

A mixin of `IMAPServer`.  Credentials are accepted only over TLS; every
failure (unknown user, wrong password, locked out) gets the same
`NO [AUTHENTICATIONFAILED]`, after the throttle's delay.
"""
from __future__ import annotations

import base64
import binascii

from twisted.cred import credentials
from twisted.cred.error import UnauthorizedLogin
from twisted.mail import imap4

from emailsvc.cred import passwords
from emailsvc.imap.wire import AlreadyAnswered, Bad, No

TEMPORARY_FAILURE = "Temporary authentication failure"

CRLF = b"\r\n"


class AuthCommands:
    """STARTTLS, LOGIN and AUTHENTICATE."""

    async def cmd_starttls(self, tag, args, uid):
        args.end()
        if self.tls_active:
            raise Bad("TLS is active already")
        if not self.can_start_tls():
            raise No("TLS is not available")
        self.tagged(tag, b"OK", "Begin TLS negotiation now")
        # Anything the client sent behind STARTTLS came in clear text: running
        # it inside TLS would let an attacker inject commands.
        self._buffer = b""
        self._reset_command()
        self.transport.startTLS(self.ctx)
        self.tls_active = True
        raise AlreadyAnswered()

    async def cmd_login(self, tag, args, uid):
        username = args.astring("user name")
        password = args.astring("password")
        args.end()
        return await self.login(username, password)

    async def cmd_authenticate(self, tag, args, uid):
        mechanism = args.keyword("mechanism")
        initial = args.astring("initial response") if args.more() else None
        args.end()
        if mechanism != "PLAIN":
            raise No("Unsupported authentication mechanism")
        if not self.tls_active:
            raise No("Authentication requires TLS", "PRIVACYREQUIRED")
        if initial is None:
            self.write(b"+ " + CRLF)
            initial = await self.read_line()
        elif initial == b"=":
            initial = b""
        if initial.strip() == b"*":
            raise Bad("Authentication cancelled")
        try:
            decoded = base64.b64decode(initial.strip(), validate=True)
        except (binascii.Error, ValueError):
            raise Bad("Invalid base64 in authentication") from None
        parts = decoded.split(b"\x00")
        if len(parts) != 3 or not parts[1]:
            raise Bad("Malformed PLAIN response")
        authzid, authcid, password = parts
        if authzid and authzid != authcid:
            raise No("Authorization identity not allowed", "AUTHORIZATIONFAILED")
        return await self.login(authcid, password)

    async def login(self, username: bytes, password: bytes):
        """Check credentials through the portal; become authenticated."""
        if not self.tls_active:
            raise No("Login requires TLS (STARTTLS first)", "PRIVACYREQUIRED")
        portal = self.factory.portal_for(self.peer_host)
        creds = credentials.UsernamePassword(username.decode("utf-8", "replace"),
                                             password.decode("utf-8", "replace"))
        try:
            interface, avatar, logout = await portal.login(creds, None, imap4.IAccount)
        except UnauthorizedLogin:
            self._auth_failures += 1
            self._close_after_reply = self._auth_failures >= self.max_auth_failures
            raise No("Authentication failed", "AUTHENTICATIONFAILED") from None
        except passwords.Busy:
            raise No(TEMPORARY_FAILURE, "UNAVAILABLE") from None
        except Exception:
            self.log.failure("IMAP login failed for {peer}", peer=self.peer_host)
            raise No(TEMPORARY_FAILURE, "UNAVAILABLE") from None
        if self.closed:
            logout()
            raise AlreadyAnswered()
        self.account = avatar
        self._onLogout = logout
        self.state = "auth"
        self.setTimeout(self.postauth_timeout)
        return "CAPABILITY " + self.capability_line().decode("ascii"), "Logged in"
