"""IMAP4rev1 server over the mail store (see server.py)."""
