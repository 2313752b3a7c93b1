"""emailsvc: an email service built on Twisted."""
