"""twistd plugin: ``twistd -n emailsvc --config FILE``."""
from twisted.application.service import ServiceMaker

emailsvc = ServiceMaker(
    "emailsvc",
    "emailsvc.tap",
    "A complete email service: SMTP, IMAP, POP3, JMAP and webmail.",
    "emailsvc",
)
