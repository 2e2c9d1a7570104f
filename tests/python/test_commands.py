"""Built-in commands, and user commands registered through --handlers."""

import os
import unittest

from dspex_worker.registry import CommandRegistry
from worker_harness import HandlerModuleTestCase, WorkerTestCase

USER_HANDLERS = {
    "math_handlers.py": """
        from dspex_worker import command

        @command("add")
        def add(args, ctx):
            return {"sum": args["a"] + args["b"]}

        @command("whoami")
        def whoami(args, ctx):
            return {"worker_id": ctx.worker_id, "session_id": ctx.session_id,
                    "request_id": ctx.request_id}

        @command("count")
        def count(args, ctx):
            ctx.state["n"] = ctx.state.get("n", 0) + 1
            ctx.session_state["n"] = ctx.session_state.get("n", 0) + 1
            return {"worker": ctx.state["n"], "session": ctx.session_state["n"]}
    """,
    "failing_handlers.py": """
        import sys
        from dspex_worker import command

        class QuotaExceeded(Exception):
            pass

        @command("explode")
        def explode(args, ctx):
            raise QuotaExceeded("quota of 3 exceeded")

        @command("lookup")
        def lookup(args, ctx):
            return {}["missing"]

        @command("quit")
        def quit(args, ctx):
            sys.exit(4)

        @command("unencodable")
        def unencodable(args, ctx):
            return {"value": object()}

        @command
        def big(args, ctx):
            return "z" * args["n"]
    """,
    "broken_handlers.py": """
        raise ImportError("this module cannot be loaded")
    """,
    "shadowing_handlers.py": """
        from dspex_worker import command

        @command("ping")
        def my_ping(args, ctx):
            return "not the real ping"
    """,
}


class HandlerTestCase(HandlerModuleTestCase):
    MODULES = USER_HANDLERS


class UserCommandTest(HandlerTestCase):
    def test_handlers_from_several_modules(self):
        worker = self.start_with("math_handlers,failing_handlers")
        self.assertEqual(worker.call("add", {"a": 2, "b": 3}), {"sum": 5})
        commands = worker.call("list_commands")["commands"]
        for name in ("add", "explode", "big", "ping", "create_program"):
            self.assertIn(name, commands)

    def test_context_describes_the_call(self):
        worker = self.start_with("math_handlers", worker_id="w7")
        result = worker.call("whoami", session_id="s1")
        self.assertEqual(result["worker_id"], "w7")
        self.assertEqual(result["session_id"], "s1")
        self.assertIsInstance(result["request_id"], int)

    def test_state_persists_and_session_state_is_cleaned(self):
        worker = self.start_with("math_handlers")
        worker.call("count", session_id="a")
        self.assertEqual(worker.call("count", session_id="a"), {"worker": 2, "session": 2})
        self.assertEqual(worker.call("count", session_id="b"), {"worker": 3, "session": 1})
        self.assertEqual(worker.call("get_stats")["sessions"], 2)
        worker.call("cleanup_session", {"session_id": "a"})
        self.assertEqual(worker.call("count", session_id="a"), {"worker": 4, "session": 1})

    def test_exception_becomes_a_failed_reply(self):
        worker = self.start_with("failing_handlers")
        error = worker.error("explode")
        self.assertEqual(error["type"], "QuotaExceeded")
        self.assertEqual(error["message"], "quota of 3 exceeded")
        self.assertIn("Traceback", error["traceback"])
        self.assertIn("failing_handlers.py", error["traceback"])
        self.assertIn("raise QuotaExceeded", error["traceback"])
        self.assertEqual(worker.call("ping")["status"], "ok")

    def test_key_error_message_is_not_quoted_twice(self):
        worker = self.start_with("failing_handlers")
        error = worker.error("lookup")
        self.assertEqual((error["type"], error["message"]), ("KeyError", "missing"))

    def test_sys_exit_in_a_handler_does_not_end_the_worker(self):
        worker = self.start_with("failing_handlers")
        self.assertEqual(worker.error("quit")["type"], "SystemExit")
        self.assertEqual(worker.call("ping")["status"], "ok")

    def test_unencodable_result_is_a_failed_reply(self):
        worker = self.start_with("failing_handlers")
        error = worker.error("unencodable")
        self.assertEqual(error["type"], "TypeError")
        self.assertIn("unencodable", error["message"])
        self.assertEqual(worker.call("ping")["status"], "ok")

    def test_reply_above_the_frame_limit_becomes_a_classified_error(self):
        worker = self.start_with("failing_handlers", "--max-frame-bytes", "4096")
        self.assertEqual(worker.call("big", {"n": 3000}), "z" * 3000)
        error = worker.error("big", {"n": 5000})
        self.assertEqual(error["type"], "FrameTooLarge")
        self.assertEqual(worker.call("ping")["status"], "ok")

    def assertRefusesStart(self, worker, message):
        """A worker that cannot start as configured answers its first
        request (the host's init ping) with invalid_config and that one
        line, logs the same line (no traceback) and exits 3."""
        error = worker.error("ping")
        self.assertEqual(error["type"], "invalid_config")
        self.assertEqual(error["message"], message)
        self.assertExitCode(worker, 3)
        stderr = worker.stderr_text()
        self.assertIn(message, stderr)
        self.assertNotIn("Traceback", stderr)
        self.assertEqual(len(stderr.strip().splitlines()), 1, stderr)

    def test_module_that_fails_to_import_stops_startup(self):
        worker = self.start_with("broken_handlers")
        path = os.path.join(self._dir.name, "broken_handlers.py")
        self.assertRefusesStart(
            worker, "handler module 'broken_handlers' failed to import: "
                    f"ImportError: this module cannot be loaded (at {path}:2)")

    def test_missing_module_stops_startup(self):
        worker = self.start_with("no_such_module_xyz")
        self.assertRefusesStart(
            worker, "handler module 'no_such_module_xyz' failed to import: "
                    "ModuleNotFoundError: No module named 'no_such_module_xyz'")

    def test_shadowing_a_builtin_stops_startup(self):
        worker = self.start_with("shadowing_handlers")
        error = worker.error("ping")
        self.assertEqual(error["type"], "invalid_config")
        self.assertIn("'ping' is already registered", error["message"])
        self.assertExitCode(worker, 3)

    def test_a_refused_start_exits_on_eof_without_a_request(self):
        worker = self.start_with("no_such_module_xyz")
        worker.close_stdin()
        self.assertExitCode(worker, 3)


class BuiltinCommandTest(WorkerTestCase):
    def test_get_stats_counts_requests_and_errors(self):
        worker = self.start_worker(worker_id="stats")
        worker.call("ping")
        worker.error("nope")
        stats = worker.call("get_stats")
        self.assertEqual(stats["worker_id"], "stats")
        self.assertEqual(stats["pid"], worker.pid)
        self.assertEqual(stats["requests"], 3)
        self.assertEqual(stats["errors"], 1)
        self.assertEqual((stats["programs"], stats["sessions"]), (0, 0))
        self.assertIsInstance(stats["uptime_s"], float)
        self.assertIsInstance(stats["last_activity"], float)

    def test_echo_returns_any_json(self):
        worker = self.start_worker()
        payload = {"list": [1, 2.5, None, True], "text": "h\u00e9llo \u2603", "nested": {"a": []}}
        self.assertEqual(worker.call("echo", {"payload": payload}), {"payload": payload})

    def test_cleanup_session_defaults_to_the_request_session(self):
        worker = self.start_worker()
        worker.call("create_program", {"signature": "a -> b"}, session_id="s")
        self.assertEqual(worker.call("cleanup_session", session_id="s")["cleaned"], 1)
        self.assertEqual(worker.call("cleanup_session", {"session_id": "s"})["cleaned"], 0)


class RegistryTest(unittest.TestCase):
    def test_duplicate_names_are_refused(self):
        registry = CommandRegistry()
        registry.register("x", lambda args, ctx: 1)
        with self.assertRaises(ValueError):
            registry.register("x", lambda args, ctx: 2)

    def test_bare_decorator_uses_the_function_name(self):
        registry = CommandRegistry()

        @registry.command
        def hello(args, ctx):
            return "hi"
        self.assertIs(registry.get("hello"), hello)

    def test_inline_survives_include(self):
        inner = CommandRegistry()
        inner.register("quick", lambda args, ctx: 1, inline=True)
        inner.register("slow", lambda args, ctx: 2)
        outer = CommandRegistry()
        outer.include(inner)
        self.assertEqual(outer.inline_names(), {"quick"})


if __name__ == "__main__":
    unittest.main()
