"""Framing and request decoding, in-process and over a real worker's pipes."""

import json
import os
import threading
import time
import unittest

from dspex_worker.protocol import (Channel, FrameTooLarge, ProtocolError,
                                   TruncatedFrame, decode_request,
                                   encode_failure, encode_success)
from worker_harness import WorkerTestCase, frame


class ChannelTest(unittest.TestCase):
    def setUp(self):
        self.rfd, self.wfd = os.pipe()
        self.addCleanup(self._close)

    def _close(self):
        for fd in (self.rfd, self.wfd):
            try:
                os.close(fd)
            except OSError:
                pass

    def test_two_frames_in_one_write_are_read_separately(self):
        os.write(self.wfd, frame(b'{"a":1}') + frame(b'{"b":2}'))
        channel = Channel(self.rfd, self.wfd)
        self.assertEqual(channel.read_frame(), b'{"a":1}')
        self.assertEqual(channel.read_frame(), b'{"b":2}')

    def test_clean_eof_returns_none(self):
        os.close(self.wfd)
        self.assertIsNone(Channel(self.rfd, -1).read_frame())

    def test_eof_inside_header_and_payload_is_truncated_frame(self):
        for partial in (b"\x00\x00", frame(b'{"id":1}')[:-3]):
            rfd, wfd = os.pipe()
            os.write(wfd, partial)
            os.close(wfd)
            with self.assertRaises(TruncatedFrame):
                Channel(rfd, -1).read_frame()
            os.close(rfd)

    def test_oversized_header_raises_before_reading_the_body(self):
        os.write(self.wfd, (1001).to_bytes(4, "big"))
        with self.assertRaises(FrameTooLarge) as caught:
            Channel(self.rfd, self.wfd, max_frame_bytes=1000).read_frame()
        self.assertEqual(caught.exception.length, 1001)

    def test_empty_frame_is_an_empty_payload(self):
        os.write(self.wfd, frame(b""))
        self.assertEqual(Channel(self.rfd, self.wfd).read_frame(), b"")

    def test_large_frame_crosses_the_pipe_in_pieces(self):
        payload = os.urandom(3 * 1024 * 1024 + 7)
        sender = Channel(-1, self.wfd)
        thread = threading.Thread(target=sender.write_frame, args=(payload,))
        thread.start()
        received = Channel(self.rfd, -1).read_frame()
        thread.join(5)
        self.assertEqual(received, payload)


class DecodeTest(unittest.TestCase):
    def decode(self, obj):
        return decode_request(json.dumps(obj).encode())

    def test_full_request(self):
        self.assertEqual(
            self.decode({"id": 3, "command": "ping", "args": {"a": 1}, "session_id": "s"}),
            (3, "ping", {"a": 1}, "s"))

    def test_args_and_session_are_optional(self):
        self.assertEqual(self.decode({"id": 0, "command": "ping"}), (0, "ping", {}, None))

    def test_invalid_requests(self):
        cases = [
            (b"not json", 0),
            (b"\xff\xfe", 0),
            (b"[1,2]", 0),
            (json.dumps({"id": -1, "command": "x"}).encode(), 0),
            (json.dumps({"id": True, "command": "x"}).encode(), 0),
            (json.dumps({"id": "7", "command": "x"}).encode(), 0),
            (json.dumps({"id": 7}).encode(), 7),
            (json.dumps({"id": 7, "command": "x", "args": [1]}).encode(), 7),
            (json.dumps({"id": 7, "command": "x", "session_id": 5}).encode(), 7),
        ]
        for payload, expected_id in cases:
            with self.subTest(payload=payload):
                with self.assertRaises(ProtocolError) as caught:
                    decode_request(payload)
                self.assertEqual(caught.exception.request_id, expected_id)

    def test_nan_result_is_refused_not_sent(self):
        with self.assertRaises(ValueError):
            encode_success(1, float("nan"))

    def test_failure_encoding_survives_lone_surrogates(self):
        reply = json.loads(encode_failure(4, "E", "bad \udcff byte").decode("utf-8"))
        self.assertEqual(reply["id"], 4)
        self.assertIn("udcff", reply["error"]["message"])


class WireTest(WorkerTestCase):
    def test_ping_reports_identity(self):
        worker = self.start_worker("--mode", "single", worker_id="w42")
        result = worker.call("ping")
        self.assertEqual(result["status"], "ok")
        self.assertEqual(result["worker_id"], "w42")
        self.assertEqual(result["pid"], worker.pid)
        self.assertEqual(result["mode"], "single")
        self.assertRegex(result["python_version"], r"^\d+\.\d+\.\d+")
        self.assertIsInstance(result["uptime_s"], float)

    def test_unknown_command_is_named(self):
        worker = self.start_worker()
        error = worker.error("frobnicate")
        self.assertEqual(error["type"], "UnknownCommand")
        self.assertIn("frobnicate", error["message"])
        self.assertTrue(worker.call("ping"))

    def test_bad_json_gets_protocol_error_with_id_zero_and_worker_survives(self):
        worker = self.start_worker()
        worker.send(b"{this is not json")
        reply = worker.read_frame()
        self.assertEqual(reply["id"], 0)
        self.assertFalse(reply["success"])
        self.assertEqual(reply["error"]["type"], "ProtocolError")
        self.assertEqual(worker.call("echo", {"payload": 1}), {"payload": 1})

    def test_deeply_nested_args_are_the_callers_invalid_request(self):
        # The host writes the id first: the request is answered by its id
        # (tests/python/test_json_depth.py has the rest).
        worker = self.start_worker()
        worker.send(b'{"id":1,"command":"echo","session_id":null,"args":{"payload":'
                    + b"[" * 100000 + b"]" * 100000 + b"}}")
        reply = worker.read_frame()
        self.assertEqual((reply["id"], reply["error"]["type"]), (1, "invalid_request"))
        self.assertEqual(worker.call("ping")["status"], "ok")

    def test_request_without_command_keeps_its_id(self):
        worker = self.start_worker()
        worker.send({"id": 99, "args": {}})
        reply = worker.read_frame()
        self.assertEqual((reply["id"], reply["error"]["type"]), (99, "ProtocolError"))

    def test_request_split_across_many_small_writes(self):
        worker = self.start_worker()
        data = frame({"id": 5, "command": "echo", "args": {"payload": "x" * 300},
                      "session_id": None})
        for i in range(0, len(data), 7):
            worker.send_raw(data[i:i + 7])
            if i % 70 == 0:
                time.sleep(0.002)  # let the worker see a truly partial frame
        reply = worker.read_frame()
        self.assertEqual(reply["id"], 5)
        self.assertEqual(reply["result"]["payload"], "x" * 300)

    def test_pipelined_requests_are_answered_in_order(self):
        worker = self.start_worker()
        worker.send_raw(b"".join(
            frame({"id": i, "command": "echo", "args": {"payload": i}, "session_id": None})
            for i in range(1, 51)))
        for i in range(1, 51):
            reply = worker.read_frame()
            self.assertEqual((reply["id"], reply["result"]["payload"]), (i, i))

    def test_one_mebibyte_payload_both_ways(self):
        worker = self.start_worker()
        payload = "\u00e9" + "abcdefgh" * (128 * 1024)  # > 1 MiB, non-ASCII first
        self.assertEqual(worker.call("echo", {"payload": payload})["payload"], payload)

    def test_oversized_inbound_frame_is_fatal(self):
        worker = self.start_worker("--max-frame-bytes", "1024")
        worker.send_raw((2048).to_bytes(4, "big") + b"x" * 100)
        reply = worker.read_frame()
        self.assertEqual(reply["id"], 0)
        self.assertEqual(reply["error"]["type"], "FrameTooLarge")
        self.assertExitCode(worker, 2)

    def test_default_limit_refuses_a_4_gib_header(self):
        worker = self.start_worker()
        worker.send_raw(b"\xff\xff\xff\xff")
        self.assertEqual(worker.read_frame()["error"]["type"], "FrameTooLarge")
        self.assertExitCode(worker, 2)


if __name__ == "__main__":
    unittest.main()
