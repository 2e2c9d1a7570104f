"""Fault-injection commands: absent by default, each failure exact with the flag."""

import signal
import time

from worker_harness import WorkerTestCase, frame

FAULT_COMMANDS = ("fault_exit", "fault_abort", "fault_hang", "fault_sleep",
                  "fault_garbage", "fault_oversized", "fault_print", "fault_alloc",
                  "fault_partial", "fault_raise", "fault_echo", "fault_nest")


class FaultsDisabledTest(WorkerTestCase):
    def test_fault_commands_are_unknown_without_the_flag(self):
        worker = self.start_worker()
        for name in FAULT_COMMANDS:
            with self.subTest(command=name):
                error = worker.error(name, {"code": 3})
                self.assertEqual(error["type"], "UnknownCommand")
                self.assertIn("--fault-injection", error["message"])
        self.assertTrue(worker.alive())
        self.assertEqual(worker.call("echo", {"payload": 1}), {"payload": 1})


class FaultTest(WorkerTestCase):
    def setUp(self):
        self.worker = self.start_worker("--fault-injection")

    def send(self, command, args=None, request_id=1):
        self.worker.send({"id": request_id, "command": command, "args": args or {},
                          "session_id": None})

    def test_all_fault_commands_are_listed(self):
        commands = self.worker.call("list_commands")["commands"]
        for name in FAULT_COMMANDS:
            self.assertIn(name, commands)

    def test_fault_exit_uses_the_given_code(self):
        self.send("fault_exit", {"code": 7})
        self.assertExitCode(self.worker, 7)
        self.assertEqual(self.worker.read_until_eof(), b"")

    def test_fault_abort_dies_of_sigabrt(self):
        self.send("fault_abort")
        self.assertExitCode(self.worker, -signal.SIGABRT)

    def test_fault_hang_never_replies_but_stops_on_sigterm(self):
        # A reply first: the worker is up and its SIGTERM handler set (a
        # slow start under load would otherwise meet the default action).
        self.worker.call("ping")
        self.send("fault_hang", request_id=2)
        self.worker.assert_no_output(0.3)
        self.worker.signal(signal.SIGTERM)
        self.assertExitCode(self.worker, 0)

    def test_fault_sleep_replies_after_the_delay(self):
        started = time.monotonic()
        self.assertEqual(self.worker.call("fault_sleep", {"seconds": 0.3}), {"slept_s": 0.3})
        self.assertGreaterEqual(time.monotonic() - started, 0.3)

    def test_fault_garbage_writes_raw_bytes_then_replies(self):
        self.send("fault_garbage", {"bytes": 40}, request_id=9)
        garbage = self.worker.read_exact(40)
        self.assertTrue(garbage.startswith(b"\xff\xfe garbage"))
        reply = self.worker.read_frame()
        self.assertEqual((reply["id"], reply["result"]), (9, {"garbage_bytes": 40}))

    def test_fault_oversized_announces_a_frame_it_never_finishes(self):
        self.send("fault_oversized", {"length": 0xFFFFFFFF})
        self.assertEqual(self.worker.read_exact(4), b"\xff\xff\xff\xff")
        self.assertEqual(self.worker.read_exact(16), b"x" * 16)
        self.worker.assert_no_output(0.2)
        self.assertTrue(self.worker.alive())

    def test_fault_print_does_not_touch_the_stream(self):
        self.assertEqual(self.worker.call("fault_print", {"text": "stray text"}),
                         {"printed": "stray text"})
        self.assertEqual(self.worker.call("ping")["status"], "ok")
        self.worker.close_stdin()
        self.assertExitCode(self.worker, 0)
        self.assertEqual(self.worker.stderr_text().count("stray text"), 3)

    def test_fault_alloc_reports_the_size(self):
        self.assertEqual(self.worker.call("fault_alloc", {"mb": 8}),
                         {"allocated_mb": 8, "held_mb": 0})
        self.assertEqual(self.worker.call("fault_alloc", {"mb": 4, "hold": True}),
                         {"allocated_mb": 4, "held_mb": 4})

    def test_fault_partial_dies_mid_reply(self):
        self.send("fault_partial", request_id=3)
        data = self.worker.read_until_eof()
        self.assertExitCode(self.worker, 1)
        self.assertGreater(len(data), 4)
        announced = int.from_bytes(data[:4], "big")
        self.assertLess(len(data) - 4, announced)
        self.assertTrue(data[4:].startswith(b'{"id":3'))

    def test_fault_raise_and_echo(self):
        error = self.worker.error("fault_raise", {"message": "boom"})
        self.assertEqual((error["type"], error["message"]), ("RuntimeError", "boom"))
        self.assertEqual(self.worker.call("fault_echo", {"payload": [1, "a"]}),
                         {"payload": [1, "a"]})

    def test_invalid_fault_arguments_are_refused(self):
        self.assertEqual(self.worker.error("fault_exit", {"code": 300})["type"], "ValueError")
        self.assertEqual(self.worker.error("fault_sleep", {"seconds": -1})["type"], "ValueError")
        self.assertTrue(self.worker.alive())

    def test_megabyte_fault_echo(self):
        payload = "p" * (1024 * 1024)
        self.worker.send_raw(frame({"id": 4, "command": "fault_echo",
                                    "args": {"payload": payload}, "session_id": None}))
        self.assertEqual(self.worker.read_frame()["result"]["payload"], payload)
