"""A DNS server on 127.0.0.1 (UDP and TCP) that answers NXDOMAIN to everything.

    python benchmarks/nxdomain_dns.py PORT

The benchmarks point emailsvc's checks at it: every lookup is answered at
once, as a warm local resolver would for names that do not exist.  Prints
"ready" once it listens.
"""
import sys

from twisted.internet import reactor
from twisted.names import dns, server


def main():
    port = int(sys.argv[1])
    # No authorities, caches or clients: every query fails with DomainError,
    # which the server answers with NXDOMAIN.
    factory = server.DNSServerFactory(authorities=[], caches=[], clients=[])
    reactor.listenUDP(port, dns.DNSDatagramProtocol(factory), interface="127.0.0.1")
    reactor.listenTCP(port, factory, interface="127.0.0.1")
    reactor.callWhenRunning(lambda: print("ready", flush=True))
    reactor.run()


if __name__ == "__main__":
    main()
