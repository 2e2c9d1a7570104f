"""Protocol 3: ctx.call, a handler calling back into its host. The test
plays the host: it reads the worker's call frame, checks it and answers
with a result frame (or not)."""

import random
import time
import unittest

from worker_harness import HandlerModuleTestCase

HANDLERS = """
    import asyncio
    import threading
    from dspex_worker import Cancelled, HostCallError, command

    def _call(ctx, args):
        options = {key: args[key] for key in ("timeout", "session") if key in args}
        return ctx.call(args.get("target", "pool:tools"), args.get("command", "lookup"),
                        args.get("args"), **options)

    @command("ask")
    def ask(args, ctx):
        try:
            return {"result": _call(ctx, args)}
        except HostCallError as exc:
            return {"error": [exc.error_class, exc.message, str(exc)]}

    @command("ask_cancel")
    def ask_cancel(args, ctx):
        try:
            _call(ctx, args)
        except Cancelled:
            ctx.state["ask_cancelled"] = ctx.cancelled
            raise

    @command("ask_async")
    async def ask_async(args, ctx):
        try:
            result = await _call(ctx, args)
        except HostCallError as exc:
            return {"error": [exc.error_class, exc.message]}
        except asyncio.CancelledError:
            ctx.state["async_cancelled"] = True
            raise
        return {"result": result, "thread": threading.current_thread().name}

    @command("ask_gather")
    async def ask_gather(args, ctx):
        return await asyncio.gather(*(ctx.call("fn:double", "run", {"i": i})
                                      for i in range(args["n"])))

    @command("ask_gen")
    def ask_gen(args, ctx):
        for i in range(args["n"]):
            yield ctx.call("pool:tools", "step", {"i": i})

    @command("ask_bad")
    def ask_bad(args, ctx):
        refused = []
        for target, name, call_args, options in (
                ("tools", "lookup", None, {}), ("pool:", "lookup", None, {}),
                ("db:x", "lookup", None, {}), (None, "lookup", None, {}),
                ("pool:tools", "", None, {}), ("pool:tools", 3, None, {}),
                ("pool:tools", "lookup", [1], {}), ("pool:tools", "lookup", {"s": {1}}, {}),
                ("pool:tools", "lookup", {"x": float("nan")}, {}),
                ("pool:tools", "lookup", None, {"timeout": -1}),
                ("pool:tools", "lookup", None, {"timeout": "1"}),
                ("pool:tools", "lookup", None, {"session": 5})):
            try:
                ctx.call(target, name, call_args, **options)
                refused.append("sent")
            except HostCallError as exc:
                refused.append(exc.error_class)
        return refused

    @command("ask_inline", inline=True)
    def ask_inline(args, ctx):
        try:
            ctx.call("pool:tools", "lookup")
        except HostCallError as exc:
            return exc.error_class

    def choose_action(question, notes, script):
        return script[len(notes)]

    @command("agent")                 # the loop of docs/handlers.md "Calling the host"
    def agent(args, ctx):
        notes = []
        for step in range(args.get("max_steps", 5)):
            action = choose_action(args["question"], notes, args["script"])
            if action["tool"] == "finish":
                return {"answer": action["input"], "steps": step, "notes": notes}
            try:
                observation = ctx.call("pool:tools", action["tool"],
                                       {"input": action["input"]}, timeout=10)
            except HostCallError as exc:
                observation = {"error": str(exc)}
            notes.append({"action": action, "observation": observation})
        return {"answer": None, "steps": len(notes)}

    @command("state", inline=True)
    def state(args, ctx):
        return dict(ctx.state)
"""


class HostCallTestCase(HandlerModuleTestCase):
    MODULES = {"host_call_handlers.py": HANDLERS}

    def start(self, *flags):
        return self.start_with("host_call_handlers", *flags)

    def expect_call(self, worker, request_id, timeout=5.0):
        frame = worker.read_frame(timeout)
        self.assertEqual((frame.get("type"), frame.get("id")), ("call", request_id), frame)
        self.assertIsInstance(frame["call"], int)
        return frame

    def answer(self, worker, call, result):
        worker.send({"type": "result", "call": call, "success": True, "result": result})

    def fail_call(self, worker, call, error_class, message):
        worker.send({"type": "result", "call": call, "success": False,
                     "error": {"type": error_class, "message": message}})

    def assertStats(self, worker, **expected):
        stats = worker.call("get_stats")
        self.assertEqual({key: stats[key] for key in expected}, expected)


class CallTest(HostCallTestCase):
    def test_a_result_is_returned(self):
        worker = self.start()
        worker.send({"id": 1, "command": "ask", "session_id": "s1",
                     "args": {"args": {"q": "dspy"}}})
        frame = self.expect_call(worker, 1)
        self.assertEqual(frame, {"type": "call", "id": 1, "call": frame["call"],
                                 "target": "pool:tools", "command": "lookup",
                                 "args": {"q": "dspy"}})
        self.assertStats(worker, host_calls=1)
        self.answer(worker, frame["call"], {"hits": [1, 2]})
        self.assertEqual(worker.read_frame(), {"id": 1, "success": True,
                                               "result": {"result": {"hits": [1, 2]}}})
        self.assertStats(worker, host_calls=0, host_calls_total=1,
                         host_call_results_ignored=0)
        self.assertEqual(worker.call("ping")["protocol"], 3)

    def test_an_error_result_raises_host_call_error(self):
        worker = self.start()
        worker.send({"id": 2, "command": "ask", "args": {"target": "fn:search"}})
        frame = self.expect_call(worker, 2)
        self.assertEqual((frame["target"], frame["args"]), ("fn:search", {}))
        self.fail_call(worker, frame["call"], "python_error", "KeyError: b")
        self.assertEqual(worker.read_frame()["result"]["error"],
                         ["python_error", "KeyError: b", "python_error: KeyError: b"])
        # Not caught: the request fails with it.
        worker.send({"id": 3, "command": "ask_cancel"})
        frame = self.expect_call(worker, 3)
        self.fail_call(worker, frame["call"], "worker_crashed", "the worker died")
        error = worker.read_frame()["error"]
        self.assertEqual((error["type"], error["message"]),
                         ("HostCallError", "worker_crashed: the worker died"))

    def test_the_session_field(self):
        worker = self.start()
        cases = (({}, None), ({"session": None}, (None,)), ({"session": "other"}, ("other",)))
        for request_id, (args, expected) in enumerate(cases, start=1):
            worker.send({"id": request_id, "command": "ask", "session_id": "mine",
                         "args": args})
            frame = self.expect_call(worker, request_id)
            if expected is None:
                self.assertNotIn("session", frame)   # SAME: the request's own
            else:
                self.assertEqual(frame["session"], expected[0])
            self.assertNotIn("timeout_ms", frame)
            self.answer(worker, frame["call"], request_id)
            self.assertEqual(worker.read_frame()["result"], {"result": request_id})

    def test_bad_calls_are_refused_without_a_frame(self):
        worker = self.start()
        reply = worker.request("ask_bad")   # the next frame is the reply
        self.assertEqual(reply["result"], ["invalid_request"] * 12)
        self.assertEqual(worker.call("ask_inline"), "invalid_request")
        self.assertStats(worker, host_calls=0, host_calls_total=0)

    def test_twenty_concurrent_calls_answered_out_of_order(self):
        worker = self.start("--max-concurrency", "20")
        for i in range(1, 21):
            command = "ask_async" if i % 2 else "ask"
            worker.send({"id": i, "command": command, "args": {"args": {"n": i}}})
        frames = [worker.read_frame() for _ in range(20)]
        self.assertEqual(sorted(f["id"] for f in frames), list(range(1, 21)))
        self.assertEqual(len({f["call"] for f in frames}), 20)
        self.assertStats(worker, host_calls=20)
        random.Random(25).shuffle(frames)
        for frame in frames:
            self.answer(worker, frame["call"], {"n": frame["args"]["n"] * 10})
        replies = [worker.read_frame() for _ in range(20)]
        for reply in replies:
            self.assertEqual(reply["result"]["result"], {"n": reply["id"] * 10}, reply)
        self.assertStats(worker, host_calls=0)

    def test_an_async_handler_awaits_its_calls(self):
        worker = self.start()
        worker.send({"id": 1, "command": "ask_async", "args": {"target": "fn:t"}})
        frame = self.expect_call(worker, 1)
        self.answer(worker, frame["call"], [1, 2])
        self.assertEqual(worker.read_frame()["result"],
                         {"result": [1, 2], "thread": "dspex-asyncio"})
        worker.send({"id": 2, "command": "ask_gather", "args": {"n": 5}})
        frames = [self.expect_call(worker, 2) for _ in range(5)]
        for frame in reversed(frames):
            self.answer(worker, frame["call"], frame["args"]["i"] * 2)
        self.assertEqual(worker.read_frame()["result"], [0, 2, 4, 6, 8])

    def test_a_generator_calls_between_chunks(self):
        worker = self.start()
        worker.send({"id": 1, "command": "ask_gen", "args": {"n": 3}, "stream": 4})
        for i in range(3):
            frame = self.expect_call(worker, 1)
            self.assertEqual(frame["args"], {"i": i})
            self.answer(worker, frame["call"], f"step {i}")
            self.assertEqual(worker.read_frame()["data"], f"step {i}")
        self.assertEqual(worker.read_frame(), {"id": 1, "success": True, "result": None})


    def test_an_agent_loop(self):
        worker = self.start()
        script = [{"tool": "search", "input": "dspex"}, {"tool": "calc", "input": "1/0"},
                  {"tool": "finish", "input": "42"}]
        worker.send({"id": 9, "command": "agent", "session_id": "s",
                     "args": {"question": "?", "script": script}})
        frame = self.expect_call(worker, 9)
        self.assertEqual((frame["command"], frame["args"], frame["timeout_ms"]),
                         ("search", {"input": "dspex"}, 10000))
        self.answer(worker, frame["call"], {"hits": 3})
        frame = self.expect_call(worker, 9)
        self.fail_call(worker, frame["call"], "python_error", "ZeroDivisionError: division by zero")
        result = worker.read_frame()["result"]
        self.assertEqual((result["answer"], result["steps"]), ("42", 2))
        self.assertEqual([note["observation"] for note in result["notes"]],
                         [{"hits": 3}, {"error": "python_error: ZeroDivisionError: division by zero"}])


class TimeoutAndCancelTest(HostCallTestCase):
    def assertCancelCall(self, worker, call):
        self.assertEqual(worker.read_frame(), {"type": "cancel_call", "call": call})

    def test_a_call_timeout(self):
        for command in ("ask", "ask_async"):
            with self.subTest(command=command):
                worker = self.start()
                worker.send({"id": 1, "command": command, "args": {"timeout": 0.2}})
                frame = self.expect_call(worker, 1)
                self.assertEqual(frame["timeout_ms"], 200)
                started = time.monotonic()
                self.assertCancelCall(worker, frame["call"])
                self.assertGreater(time.monotonic() - started, 0.1)
                error = worker.read_frame()["result"]["error"]
                self.assertEqual(error[0], "command_timeout")
                self.assertIn("within 0.2 s", error[1])
                # Its late result is ignored.
                self.answer(worker, frame["call"], "late")
                worker.assert_no_output(0.2)
                self.assertStats(worker, host_calls=0, host_call_results_ignored=1)

    def test_the_request_deadline_bounds_the_wait(self):
        worker = self.start()
        worker.send({"id": 4, "command": "ask", "timeout_ms": 300, "args": {"timeout": 30}})
        frame = self.expect_call(worker, 4)
        self.assertCancelCall(worker, frame["call"])
        error = worker.read_frame()["result"]["error"]
        self.assertEqual(error[0], "command_timeout")
        self.assertIn("deadline of request 4", error[1])

    def test_a_cancelled_request_cancels_its_call(self):
        for command in ("ask_cancel", "ask_async"):
            with self.subTest(command=command):
                worker = self.start()
                worker.send({"id": 5, "command": command})
                frame = self.expect_call(worker, 5)
                time.sleep(0.1)
                started = time.monotonic()
                worker.send({"type": "cancel", "id": 5})
                self.assertCancelCall(worker, frame["call"])
                reply = worker.read_frame()
                self.assertLess(time.monotonic() - started, 2.0)
                self.assertEqual((reply["id"], reply["error"]["type"]), (5, "cancelled"))
                state = worker.call("state")
                if command == "ask_cancel":
                    self.assertIs(state["ask_cancelled"], True)
                else:
                    self.assertTrue(state["async_cancelled"])
                self.answer(worker, frame["call"], "late")
                self.assertStats(worker, host_calls=0, host_call_results_ignored=1,
                                 cancelled=1)
                # The request thread serves on.
                worker.send({"id": 6, "command": "ask"})
                self.answer(worker, self.expect_call(worker, 6)["call"], 1)
                self.assertEqual(worker.read_frame()["result"], {"result": 1})
                self.assertNotIn("landed outside", worker.stderr_text())

    def test_eof_fails_a_waiting_call(self):
        worker = self.start()
        worker.send({"id": 1, "command": "ask"})
        self.expect_call(worker, 1)
        worker.close_stdin()
        self.assertEqual(worker.read_frame()["result"]["error"][0], "cancelled")
        self.assertExitCode(worker, 0)


class BadResultTest(HostCallTestCase):
    def test_a_result_for_an_unknown_call_is_ignored(self):
        worker = self.start()
        self.answer(worker, 999, "nobody asked")
        self.fail_call(worker, 998, "python_error", "x")
        worker.assert_no_output(0.2)
        self.assertStats(worker, host_call_results_ignored=2, bad_control_frames=0)

    def test_malformed_results_are_logged_and_ignored(self):
        worker = self.start()
        for bad in ({"type": "result"}, {"type": "result", "call": "1", "success": True},
                    {"type": "result", "call": -1, "success": True},
                    {"type": "result", "call": 77, "success": "yes"},
                    {"type": "result", "call": 77, "success": False, "error": "boom"}):
            worker.send(bad)
        worker.assert_no_output(0.2)
        self.assertStats(worker, bad_control_frames=5, host_call_results_ignored=0)
        self.assertIn("malformed control frame", worker.stderr_text())
        # One naming a call in flight fails that call (no other answer comes).
        worker.send({"id": 1, "command": "ask"})
        frame = self.expect_call(worker, 1)
        worker.send({"type": "result", "call": frame["call"], "success": False,
                     "error": {"message": "no type"}})
        error = worker.read_frame()["result"]["error"]
        self.assertEqual(error[0], "protocol_error")
        self.assertIn(f"call {frame['call']}", error[1])
        # One too deep for the worker's JSON parser: result_too_deep.
        worker.send({"id": 2, "command": "ask"})
        call = self.expect_call(worker, 2)["call"]
        worker.send(f'{{"type":"result","call":{call},"success":true,"result":'
                    f'{"[" * 5000}{"]" * 5000}}}'.encode())
        self.assertEqual(worker.read_frame()["result"]["error"][0], "result_too_deep")
        self.assertEqual(worker.call("ping")["status"], "ok")


if __name__ == "__main__":
    unittest.main()
