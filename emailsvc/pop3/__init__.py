"""POP3 (RFC 1939, 2449, 2595, 3206, 5034) over the mail store.

`server.POP3Server` speaks the protocol, `maildrop.Maildrop` is the user's
INBOX seen as a POP3 maildrop, `wire` turns stored bytes into what goes on
the wire, and `factory.build_factory` puts them together for a listener.
"""
