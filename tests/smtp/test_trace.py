"""Trace fields and header stripping."""
from twisted.trial import unittest

from emailsvc.smtp.trace import queue_id, received, return_path


class TraceTests(unittest.SynchronousTestCase):
    def test_received(self):
        field = received(helo="client.example", peer_ip="192.0.2.7", peer_host="c.example.net",
                         hostname="mx.example.org", protocol="ESMTPS", ident="ABC",
                         recipient="alice@example.org", when=0)
        self.assertEqual(field, (
            b"Received: from client.example (c.example.net [192.0.2.7])\r\n"
            b"\tby mx.example.org (emailsvc) with ESMTPS id ABC\r\n"
            b"\tfor <alice@example.org>; Thu, 01 Jan 1970 00:00:00 GMT\r\n"))

    def test_received_ipv6_and_hostile_helo(self):
        field = received(helo="evil\r\nX-Injected: 1 (x)", peer_ip="2001:db8::1", peer_host=None,
                         hostname="mx", protocol="ESMTP", ident="Q", recipient=None, when=0)
        self.assertEqual(field.count(b"\r\n"), 2)
        self.assertIn(b"from evilX-Injected: 1 x ([IPv6:2001:db8::1])", field)

    def test_return_path(self):
        self.assertEqual(return_path(""), b"Return-Path: <>\r\n")
        self.assertEqual(return_path("a@b.example"), b"Return-Path: <a@b.example>\r\n")

    def test_queue_ids_differ(self):
        self.assertEqual(len({queue_id() for _ in range(100)}), 100)
