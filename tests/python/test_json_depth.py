"""JSON nested too deep, both ways (docs/security.md "JSON depth and size").

A request whose args Python's json cannot parse (RecursionError) is the
caller's invalid_request, answered by the id the host writes first; a result
too deep to encode is an error reply to its request. Either way the worker
serves on: it is never a protocol error (id 0), which the host would take
for a broken worker.
"""

import json
import unittest

from dspex_worker.protocol import (InvalidRequest, ProtocolError, decode_request,
                                   request_id_of)
from worker_harness import HandlerModuleTestCase, WorkerTestCase

DEEP_HANDLERS = """
    from dspex_worker import command

    @command("nest")
    def nest(args, ctx):
        value = []
        for _ in range(args["depth"] - 1):
            value = [value]
        return value
"""


def host_frame(request_id, args_text, command="echo"):
    """A request as the host writes it: id first, args last."""
    return (b'{"id":%d,"command":"%s","session_id":null,"args":' % (request_id, command.encode())
            + args_text + b"}")


def nested(depth):
    return b'{"payload":' + b"[" * depth + b"]" * depth + b"}"


class DecodeDepthTest(unittest.TestCase):
    def test_too_deep_with_the_hosts_prefix_is_invalid_request_with_its_id(self):
        for depth in (1000, 20000):
            with self.subTest(depth=depth):
                with self.assertRaises(InvalidRequest) as caught:
                    decode_request(host_frame(77, nested(depth)))
                self.assertEqual(caught.exception.request_id, 77)
                self.assertEqual(caught.exception.error_type, "invalid_request")

    def test_too_deep_without_the_prefix_stays_a_protocol_error(self):
        frames = [
            b'{"args":' + nested(5000) + b',"id":5,"command":"echo"}',  # id not first
            b'{"id": 5,"args":' + nested(5000) + b'}',                   # not the host's spelling
            b'{"id":-5,"args":' + nested(5000) + b'}',
            b'{"id":123456789012345678901,"args":' + nested(5000) + b'}',  # above uint64
            b"[" * 5000 + b"]" * 5000,
        ]
        for payload in frames:
            with self.subTest(payload=payload[:30]):
                with self.assertRaises(ProtocolError) as caught:
                    decode_request(payload)
                self.assertNotIsInstance(caught.exception, InvalidRequest)
                self.assertEqual(caught.exception.request_id, 0)

    def test_request_id_of_reads_only_the_hosts_prefix(self):
        self.assertEqual(request_id_of(bytearray(b'{"id":0,"command":"x"}')), 0)
        self.assertEqual(request_id_of(b'{"id":18446744073709551615,'), (1 << 64) - 1)
        self.assertIsNone(request_id_of(b'{"id":18446744073709551616,'))
        self.assertIsNone(request_id_of(b'{"id":01,'))
        self.assertIsNone(request_id_of(b' {"id":1,'))
        self.assertIsNone(request_id_of(b'{"id":1}'))

    def test_depth_within_pythons_reach_still_parses(self):
        request_id, command, args, _ = decode_request(host_frame(3, nested(500)))
        self.assertEqual((request_id, command), (3, "echo"))
        depth, value = 0, args["payload"]
        while isinstance(value, list):
            depth, value = depth + 1, (value[0] if value else None)
        self.assertEqual(depth, 500)


class WireDepthTest(HandlerModuleTestCase):
    MODULES = {"deep_handlers.py": DEEP_HANDLERS}

    def start(self, *flags):
        return self.start_with("deep_handlers", *flags)

    def check_deep_requests(self, worker):
        # Many in a row: each is its caller's error, the worker serves on.
        for n, depth in enumerate([1000, 20000, 100000] * 4, start=1000):
            worker.send(host_frame(n, nested(depth)))
            reply = worker.read_frame()
            self.assertEqual(reply["id"], n)
            self.assertFalse(reply["success"])
            self.assertEqual(reply["error"]["type"], "invalid_request")
            self.assertIn("recursion limit", reply["error"]["message"])
        self.assertEqual(worker.call("echo", {"payload": [[1]]}), {"payload": [[1]]})
        self.assertTrue(worker.alive())

    def test_deep_requests_are_invalid_request_and_the_worker_serves_on(self):
        self.check_deep_requests(self.start())

    def test_the_same_with_request_threads(self):
        self.check_deep_requests(self.start("--max-concurrency", "4"))

    def check_deep_results(self, worker):
        for n in range(3):
            error = worker.error("nest", {"depth": 5000})
            self.assertEqual(error["type"], "RecursionError")
            self.assertIn("cannot be sent as JSON", error["message"])
        # Deep, but within Python's reach: sent as it is (the host judges it
        # against max_json_depth).
        result = worker.call("nest", {"depth": 600})
        self.assertIsInstance(result, list)
        self.assertEqual(worker.call("ping")["status"], "ok")
        self.assertTrue(worker.alive())

    def test_a_result_too_deep_to_encode_is_an_error_reply(self):
        self.check_deep_results(self.start())

    def test_the_same_on_a_request_thread(self):
        self.check_deep_results(self.start("--max-concurrency", "4"))


class FaultNestTest(WorkerTestCase):
    def test_fault_nest_returns_its_depth_or_an_error_reply(self):
        worker = self.start_worker("--fault-injection")
        value, depth = worker.call("fault_nest", {"depth": 600}), 0
        while isinstance(value, list):
            depth, value = depth + 1, (value[0] if value else None)
        self.assertEqual(depth, 600)
        self.assertEqual(worker.error("fault_nest", {"depth": 100000})["type"], "RecursionError")
        self.assertTrue(worker.alive())


if __name__ == "__main__":
    unittest.main()
