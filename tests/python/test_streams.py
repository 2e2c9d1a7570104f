"""Protocol 2: generator and async handlers, chunks and the credit window,
cancel frames, ctx.cancelled / ctx.sleep / ctx.deadline, over a real worker."""

import json
import time
import unittest

from worker_harness import HandlerModuleTestCase

HANDLERS = """
    import asyncio
    import socket
    import threading
    import time
    from dspex_worker import Cancelled, command

    @command("count")
    def count(args, ctx):
        for i in range(args["n"]):
            ctx.state["produced"] = i + 1
            yield {"i": i}
        return {"total": args["n"]}

    @command("count_plain")
    def count_plain(args, ctx):
        yield from range(args["n"])

    @command("state", inline=True)
    def state(args, ctx):
        return {k: v for k, v in ctx.state.items() if not k.startswith("_")}

    @command("spin")
    def spin(args, ctx):
        ctx.state["spinning"] = True
        try:
            n = 0
            while True:
                n += 1
        except Exception:  # a bare except Exception must not catch Cancelled
            ctx.state["swallowed"] = True
        finally:
            ctx.state["spin_finally"] = ctx.cancelled

    @command("spin_gen")
    def spin_gen(args, ctx):
        try:
            yield "first"
            ctx.state["spinning"] = True
            while True:
                pass
        finally:
            ctx.state["spin_gen_finally"] = True

    @command("endless")
    def endless(args, ctx):
        ctx.state["endless_started"] = ctx.state.get("endless_started", 0) + 1
        try:
            i = 0
            while True:
                yield i
                i += 1
        finally:
            ctx.state["endless_finally"] = ctx.state.get("endless_finally", 0) + 1

    def _gives_up(args, ctx):
        # A Cancelled of its own, raised right after a blocking C call that
        # a cancel interrupts nothing of: no bytecode between the call's
        # error and the raise delivers the worker's pending Cancelled.
        a, b = socket.socketpair()
        a.settimeout(args["wait"])
        mine = Cancelled("gave up")
        ctx.state["gives_up_waiting"] = True
        # Kept, not closed in a finally: a call there would deliver it.
        ctx.state["_gives_up_sockets"] = (a, b)
        try:
            a.recv(1)
        except TimeoutError:
            raise mine

    @command("gives_up")
    def gives_up(args, ctx):
        _gives_up(args, ctx)

    @command("gives_up_gen")
    def gives_up_gen(args, ctx):
        yield "first"
        _gives_up(args, ctx)

    @command("nap")
    def nap(args, ctx):
        started = time.monotonic()
        try:
            ctx.sleep(args["seconds"])
        finally:
            ctx.state["nap_s"] = time.monotonic() - started
        return {"woke": True}

    @command("deadline")
    def deadline(args, ctx):
        left = None if ctx.deadline is None else ctx.deadline - time.monotonic()
        return {"left": left, "cancelled": ctx.cancelled,
                "thread": threading.current_thread().name}

    @command("async_nap")
    async def async_nap(args, ctx):
        await ctx.sleep(args["seconds"])
        return {"slept": args["seconds"], "thread": threading.current_thread().name}

    @command("async_wait")
    async def async_wait(args, ctx):
        ctx.state["async_waiting"] = True
        try:
            await asyncio.sleep(60)
        except asyncio.CancelledError:
            ctx.state["async_cancelled"] = True
            raise
        finally:
            ctx.state["async_finally"] = True

    @command("async_raise")
    async def async_raise(args, ctx):
        await asyncio.sleep(0)
        raise KeyError("nope")

    @command("async_count")
    async def async_count(args, ctx):
        try:
            for i in range(args["n"]):
                await asyncio.sleep(0)
                ctx.state["async_produced"] = i + 1
                yield i
        finally:
            ctx.state["async_count_finally"] = True

    @command("busy")
    def busy(args, ctx):
        n = 0
        for i in range(args["n"]):
            n += i
            if args.get("every") and i % args["every"] == 0:
                yield i
        return n

    @command("async_busy")
    async def async_busy(args, ctx):
        await asyncio.sleep(args["n"] / 1e7)
        return 1

    @command("str_chunks")
    def str_chunks(args, ctx):
        yield "plain"
        yield 'q"uote' + chr(92) + chr(10) + chr(9) + "tab"
        yield chr(0xE9) + chr(0x20AC) + chr(0x1F600)
        yield chr(0xD800)

    @command("blobs")
    def blobs(args, ctx):
        for i in range(args["n"]):
            yield "x" * args["size"]
        return args["n"]

    @command("async_blobs")
    async def async_blobs(args, ctx):
        for i in range(args["n"]):
            await asyncio.sleep(0)
            yield "x" * args["size"]

    @command("bad_chunk")
    def bad_chunk(args, ctx):
        try:
            yield 1
            yield {1, 2}
            yield 3
        finally:
            ctx.state["bad_chunk_finally"] = True
"""


def encoded_chunk(request_id, seq, data):
    """A chunk frame's body as the worker writes it: what its byte window counts."""
    return json.dumps({"id": request_id, "type": "chunk", "seq": seq, "data": data},
                      separators=(",", ":")).encode()


class StreamTestCase(HandlerModuleTestCase):
    MODULES = {"stream_handlers.py": HANDLERS}

    def start(self, *flags):
        return self.start_with("stream_handlers", *flags)

    def state(self, worker):
        return worker.call("state")

    def wait_state(self, worker, key, timeout=5.0):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            state = self.state(worker)
            if key in state:
                return state
            time.sleep(0.01)
        self.fail(f"{key!r} never appeared in ctx.state: {self.state(worker)}")

    def assertCancelled(self, reply, request_id):
        self.assertEqual(reply["id"], request_id, reply)
        self.assertFalse(reply["success"], reply)
        self.assertEqual(reply["error"]["type"], "cancelled")
        self.assertEqual(reply["error"]["message"], f"request {request_id} was cancelled")


class GeneratorTest(StreamTestCase):
    def test_chunks_in_order_then_the_result(self):
        worker = self.start()
        worker.send({"id": 1, "command": "count", "args": {"n": 5}, "stream": 8})
        chunks = [worker.read_frame() for _ in range(5)]
        self.assertEqual(chunks, [{"id": 1, "type": "chunk", "seq": i, "data": {"i": i}}
                                  for i in range(5)])
        self.assertEqual(worker.read_frame(), {"id": 1, "success": True,
                                               "result": {"total": 5}})

    def test_a_generator_returning_none_ends_with_null(self):
        worker = self.start()
        worker.send({"id": 1, "command": "count_plain", "args": {"n": 2}, "stream": 4})
        self.assertEqual([worker.read_frame()["data"] for _ in range(2)], [0, 1])
        self.assertEqual(worker.read_frame(), {"id": 1, "success": True, "result": None})

    def test_unary_call_of_a_generator(self):
        worker = self.start()
        self.assertEqual(worker.call("count", {"n": 3}), {"total": 3})
        # None returned: the list of what it yielded.
        self.assertEqual(worker.call("count_plain", {"n": 4}), [0, 1, 2, 3])

    def test_the_credit_window_blocks_until_acked(self):
        worker = self.start()
        window = 3
        worker.send({"id": 7, "command": "count", "args": {"n": 10}, "stream": window})
        seqs = [worker.read_frame()["seq"] for _ in range(window)]
        self.assertEqual(seqs, [0, 1, 2])
        worker.assert_no_output(0.3)
        # Chunk 3 is computed and waits for credit (the generator inside
        # its yield); none after it.
        self.assertEqual(self.state(worker)["produced"], window + 1)
        worker.send({"type": "ack", "id": 7, "seq": 0})
        self.assertEqual(worker.read_frame()["seq"], 3)
        worker.assert_no_output(0.3)
        worker.send({"type": "ack", "id": 7, "seq": 3})
        self.assertEqual([worker.read_frame()["seq"] for _ in range(3)], [4, 5, 6])
        worker.assert_no_output(0.2)
        worker.send({"type": "ack", "id": 7, "seq": 6})
        self.assertEqual([worker.read_frame()["seq"] for _ in range(3)], [7, 8, 9])
        self.assertEqual(worker.read_frame()["result"], {"total": 10})

    def test_the_byte_window_blocks_until_acked(self):
        # "stream_bytes" 200, chunk frames of 91 bytes: a chunk goes while
        # less than 200 bytes are sent past the last ack, so 3 at first.
        # The chunk window (100) never binds here.
        for command in ("blobs", "async_blobs"):
            with self.subTest(command=command):
                worker = self.start()
                self.assertEqual(len(encoded_chunk(7, 0, "x" * 50)), 91)
                worker.send({"id": 7, "command": command, "args": {"n": 9, "size": 50},
                             "stream": 100, "stream_bytes": 200})
                self.assertEqual([worker.read_frame()["seq"] for _ in range(3)], [0, 1, 2])
                worker.assert_no_output(0.3)
                worker.send({"type": "ack", "id": 7, "seq": 0})   # 182 left: one more
                self.assertEqual(worker.read_frame()["seq"], 3)
                worker.assert_no_output(0.3)
                worker.send({"type": "ack", "id": 7, "seq": 3})   # 0 left
                self.assertEqual([worker.read_frame()["seq"] for _ in range(3)], [4, 5, 6])
                worker.assert_no_output(0.2)
                worker.send({"type": "ack", "id": 7, "seq": 5})   # 91 left: two more
                self.assertEqual([worker.read_frame()["seq"] for _ in range(2)], [7, 8])
                self.assertTrue(worker.read_frame()["success"])

    def test_a_chunk_larger_than_the_byte_window_goes_alone(self):
        for command in ("blobs", "async_blobs"):
            with self.subTest(command=command):
                worker = self.start()
                worker.send({"id": 8, "command": command, "args": {"n": 3, "size": 5000},
                             "stream": 100, "stream_bytes": 1000})
                for seq in range(3):
                    chunk = worker.read_frame()
                    self.assertEqual((chunk["seq"], len(chunk["data"])), (seq, 5000))
                    if seq < 2:       # after the last one: the reply
                        worker.assert_no_output(0.2)
                    worker.send({"type": "ack", "id": 8, "seq": seq})
                self.assertTrue(worker.read_frame()["success"])

    def test_stream_bytes_must_be_a_positive_integer(self):
        worker = self.start()
        for bad in (0, -5, "1000", 2.5, True):
            worker.send({"id": 3, "command": "count", "args": {"n": 1}, "stream": 4,
                         "stream_bytes": bad})
            reply = worker.read_frame()
            self.assertEqual(reply["error"]["type"], "ProtocolError", (bad, reply))
            self.assertIn("stream_bytes", reply["error"]["message"])

    def test_an_unencodable_chunk_ends_the_stream_with_an_error(self):
        worker = self.start()
        worker.send({"id": 1, "command": "bad_chunk", "stream": 4})
        self.assertEqual(worker.read_frame()["data"], 1)
        reply = worker.read_frame()
        self.assertEqual((reply["id"], reply["error"]["type"]), (1, "TypeError"))
        self.assertIn("chunk 1 of command 'bad_chunk'", reply["error"]["message"])
        self.assertTrue(self.state(worker)["bad_chunk_finally"])

    def test_str_chunks_as_the_encoder_writes_them(self):
        # A str chunk skips the encoder's encode() (worker.py _stream): the
        # same text, and one that is not UTF-8 still ends the stream with
        # a classified error.
        worker = self.start()
        worker.send({"id": 1, "command": "str_chunks", "stream": 8})
        for value in ("plain", 'q"uote\\\n\ttab', "\u00e9\u20ac\U0001F600"):
            self.assertEqual(worker.read_frame()["data"], value)
        reply = worker.read_frame()
        self.assertEqual((reply["id"], reply["error"]["type"]), (1, "UnicodeEncodeError"))
        self.assertIn("chunk 3 of command 'str_chunks'", reply["error"]["message"])

    def test_ack_for_an_unknown_id_is_ignored(self):
        worker = self.start()
        worker.send({"type": "ack", "id": 55, "seq": 3})
        worker.assert_no_output(0.2)
        self.assertEqual(worker.call("ping")["protocol"], 3)


class AsyncTest(StreamTestCase):
    def test_an_async_handler_runs_on_the_event_loop(self):
        worker = self.start()
        result = worker.call("async_nap", {"seconds": 0.01})
        self.assertEqual(result, {"slept": 0.01, "thread": "dspex-asyncio"})
        error = worker.error("async_raise")
        self.assertEqual((error["type"], error["message"]), ("KeyError", "nope"))
        self.assertIn("async_raise", error["traceback"])

    def test_200_async_handlers_wait_at_once(self):
        worker = self.start("--max-concurrency", "1000")
        started = time.monotonic()
        for i in range(200):
            worker.send({"id": i + 1, "command": "async_nap", "args": {"seconds": 0.2}})
        replies = [worker.read_frame(timeout=20) for _ in range(200)]
        elapsed = time.monotonic() - started
        self.assertEqual(sorted(r["id"] for r in replies), list(range(1, 201)))
        self.assertTrue(all(r["success"] for r in replies))
        self.assertLess(elapsed, 10.0)  # one at a time: 40 s
        self.assertEqual(worker.call("get_stats")["threads"], 0)

    def test_an_async_generator_streams_and_collects(self):
        worker = self.start()
        worker.send({"id": 3, "command": "async_count", "args": {"n": 4}, "stream": 2})
        self.assertEqual([worker.read_frame()["seq"] for _ in range(2)], [0, 1])
        worker.assert_no_output(0.3)
        self.assertEqual(self.state(worker)["async_produced"], 3)
        worker.send({"type": "ack", "id": 3, "seq": 1})
        self.assertEqual([worker.read_frame()["data"] for _ in range(2)], [2, 3])
        self.assertEqual(worker.read_frame(), {"id": 3, "success": True, "result": None})
        self.assertEqual(worker.call("async_count", {"n": 3}), [0, 1, 2])

    def test_async_cancelled(self):
        worker = self.start()
        worker.send({"id": 4, "command": "async_wait"})
        self.wait_state(worker, "async_waiting")
        worker.send({"type": "cancel", "id": 4})
        self.assertCancelled(worker.read_frame(), 4)
        state = self.state(worker)
        self.assertTrue(state["async_cancelled"] and state["async_finally"])
        self.assertEqual(worker.call("get_stats")["cancelled"], 1)

    def test_an_async_stream_waiting_for_credit_is_cancelled(self):
        worker = self.start()
        worker.send({"id": 5, "command": "async_count", "args": {"n": 10}, "stream": 1})
        self.assertEqual(worker.read_frame()["seq"], 0)
        worker.assert_no_output(0.2)
        worker.send({"type": "cancel", "id": 5})
        self.assertCancelled(worker.read_frame(), 5)
        self.assertTrue(self.wait_state(worker, "async_count_finally"))

    def test_sync_and_async_in_one_worker(self):
        worker = self.start("--max-concurrency", "4")
        worker.send({"id": 1, "command": "async_nap", "args": {"seconds": 0.3}})
        worker.send({"id": 2, "command": "nap", "args": {"seconds": 0.3}})
        replies = {r["id"]: r for r in (worker.read_frame(), worker.read_frame())}
        self.assertTrue(replies[1]["success"] and replies[2]["success"], replies)


class CancelTest(StreamTestCase):
    def test_a_pure_python_loop_is_cancelled_and_runs_finally(self):
        worker = self.start()
        worker.send({"id": 1, "command": "spin"})
        self.wait_state(worker, "spinning")
        worker.send({"type": "cancel", "id": 1})
        self.assertCancelled(worker.read_frame(), 1)
        state = self.state(worker)
        self.assertIs(state["spin_finally"], True)  # ctx.cancelled was True there
        self.assertNotIn("swallowed", state)
        # The same worker, on its one request thread, serves on.
        self.assertEqual(worker.call("deadline")["thread"], "dspex-request-1")
        stats = worker.call("get_stats")
        self.assertEqual((stats["cancelled"], stats["threads"], stats["in_flight"]), (1, 1, 0))

    def test_many_cancels_in_a_row_leave_the_worker_whole(self):
        worker = self.start()
        for i in range(1, 21):
            worker.send({"id": i, "command": "spin"})
            time.sleep(0.01)
            worker.send({"type": "cancel", "id": i})
            self.assertCancelled(worker.read_frame(), i)
        self.assertEqual(worker.call("count", {"n": 2}), {"total": 2})

    def test_cancels_racing_the_end_of_handlers_answer_each_request_once(self):
        import random
        rng = random.Random(24)
        for concurrency in ("1", "8"):
            worker = self.start("--max-concurrency", concurrency)
            count = 150
            for i in range(1, count + 1):
                args = {"n": rng.randint(0, 100000)}
                request = {"id": i, "command": rng.choice(["busy", "async_busy"]), "args": args}
                if rng.random() < 0.4:
                    request.update(command="busy", stream=10000)
                    args["every"] = 5000
                worker.send(request)
                time.sleep(rng.random() / 200)
                worker.send({"type": "cancel", "id": i})
            answered = {}
            while len(answered) < count:
                frame = worker.read_frame(timeout=20)
                if frame.get("type") == "chunk":
                    self.assertNotIn(frame["id"], answered)
                    continue
                self.assertNotIn(frame["id"], answered, frame)
                answered[frame["id"]] = frame
                self.assertTrue(frame["success"] or frame["error"]["type"] == "cancelled", frame)
            worker.assert_no_output(0.2)
            stats = worker.call("get_stats")
            self.assertEqual(stats["in_flight"], 0)
            cancelled = sum(1 for f in answered.values() if not f["success"])
            self.assertEqual((stats["cancelled"], stats["cancels_ignored"]),
                             (cancelled, count - cancelled))
            self.assertLessEqual(stats["threads"], int(concurrency))
            self.assertEqual(worker.call("busy", {"n": 3}), 3)
            self.assertNotIn("landed outside", worker.stderr_text())

    def test_cancels_racing_a_fast_stream_land_only_in_its_generator(self):
        # The stream loop opens its cancel window around next(gen) without a
        # lock while nobody cancels (worker.py _stream): a cancel at any
        # point of the loop (in the generator, encoding, writing, blocked on
        # a full pipe) lands in the generator or is seen between chunks,
        # never in the worker's own code, and each request ends once.
        import random
        rng = random.Random(28)
        worker = self.start()
        count = 150
        for i in range(1, count + 1):
            worker.send({"id": i, "command": "endless", "stream": 1 << 40})
            if i % 2 == 0:            # half of them surely mid-stream
                self.assertEqual(worker.read_frame(timeout=20)["seq"], 0)
            time.sleep(rng.random() / 500)
            worker.send({"type": "cancel", "id": i})
            while True:
                frame = worker.read_frame(timeout=20)
                self.assertEqual(frame["id"], i, frame)
                if frame.get("type") != "chunk":
                    self.assertCancelled(frame, i)
                    break
        state = self.state(worker)
        self.assertGreaterEqual(state["endless_started"], count // 2)
        self.assertEqual(state["endless_finally"], state["endless_started"])
        self.assertNotIn("landed outside", worker.stderr_text())
        self.assertEqual(worker.call("count_plain", {"n": 2}), [0, 1])
        stats = worker.call("get_stats")
        self.assertEqual((stats["cancelled"], stats["in_flight"]), (count, 0))

    def test_a_handler_raising_its_own_cancelled_over_a_pending_cancel(self):
        # The cancel's Cancelled is still pending when the handler raises
        # one of its own: it is taken in inside the window, the request is
        # answered "cancelled" once, and the worker serves on.
        for command, stream in (("gives_up", None), ("gives_up_gen", 8)):
            with self.subTest(command=command):
                worker = self.start()
                request = {"id": 5, "command": command, "args": {"wait": 0.5}}
                if stream:
                    request["stream"] = stream
                worker.send(request)
                if stream:
                    self.assertEqual(worker.read_frame()["seq"], 0)
                self.wait_state(worker, "gives_up_waiting")
                worker.send({"type": "cancel", "id": 5})
                self.assertCancelled(worker.read_frame(), 5)
                worker.assert_no_output(0.2)
                self.assertNotIn("landed outside", worker.stderr_text())
                self.assertEqual(worker.call("count_plain", {"n": 1}), [0])
                self.assertEqual(worker.call("get_stats")["in_flight"], 0)

    def test_a_sync_generator_is_cancelled_mid_stream(self):
        for command in ("endless", "spin_gen"):
            with self.subTest(command=command):
                worker = self.start()
                # endless: blocked for credit; spin_gen: looping between yields.
                worker.send({"id": 2, "command": command, "stream": 1})
                self.assertEqual(worker.read_frame()["seq"], 0)
                if command == "spin_gen":
                    worker.send({"type": "ack", "id": 2, "seq": 0})
                    self.wait_state(worker, "spinning")
                worker.send({"type": "cancel", "id": 2})
                self.assertCancelled(worker.read_frame(), 2)
                self.assertTrue(self.state(worker)[f"{command}_finally"])
                self.assertEqual(worker.call("count_plain", {"n": 1}), [0])

    def test_ctx_sleep_returns_early(self):
        worker = self.start()
        worker.send({"id": 3, "command": "nap", "args": {"seconds": 30}})
        time.sleep(0.2)
        started = time.monotonic()
        worker.send({"type": "cancel", "id": 3})
        self.assertCancelled(worker.read_frame(), 3)
        self.assertLess(time.monotonic() - started, 5)
        self.assertLess(self.state(worker)["nap_s"], 5)

    def test_a_waiting_request_is_cancelled_before_it_starts(self):
        worker = self.start()  # max_concurrency 1: 2 waits behind 1
        worker.send({"id": 1, "command": "nap", "args": {"seconds": 30}})
        worker.send({"id": 2, "command": "deadline"})
        worker.send({"type": "cancel", "id": 2})
        self.assertCancelled(worker.read_frame(), 2)
        worker.send({"type": "cancel", "id": 1})
        self.assertCancelled(worker.read_frame(), 1)

    def test_cancel_for_an_unknown_id_is_ignored(self):
        worker = self.start()
        worker.send({"type": "cancel", "id": 999})
        self.assertEqual(worker.call("deadline")["cancelled"], False)
        worker.send({"type": "cancel", "id": 1})  # finished already
        worker.assert_no_output(0.2)
        self.assertEqual(worker.call("get_stats")["cancels_ignored"], 2)

    def test_malformed_cancel_and_ack_are_logged_and_ignored(self):
        worker = self.start()
        for bad in ({"type": "cancel"}, {"type": "cancel", "id": "7"},
                    {"type": "cancel", "id": -1}, {"type": "ack", "id": 1},
                    {"type": "ack", "id": 1, "seq": "x"}, {"type": "ack", "id": True, "seq": 0}):
            worker.send(bad)
        worker.assert_no_output(0.2)
        self.assertEqual(worker.call("count_plain", {"n": 2}), [0, 1])
        stats = worker.call("get_stats")
        self.assertEqual((stats["bad_control_frames"], stats["requests"]), (6, 2))
        self.assertIn("malformed control frame", worker.stderr_text())

    def test_deadline_from_timeout_ms(self):
        worker = self.start()
        worker.send({"id": 1, "command": "deadline", "timeout_ms": 5000})
        left = worker.read_frame()["result"]["left"]
        self.assertTrue(3.0 < left <= 5.0, left)
        self.assertIsNone(worker.call("deadline")["left"])
        worker.send({"id": 2, "command": "deadline", "timeout_ms": "soon"})
        self.assertEqual(worker.read_frame()["error"]["type"], "ProtocolError")
        worker.send({"id": 3, "command": "count", "args": {"n": 1}, "stream": 0})
        self.assertEqual(worker.read_frame()["error"]["type"], "ProtocolError")

    def test_eof_cancels_streams_and_lets_others_finish(self):
        worker = self.start("--max-concurrency", "2")
        worker.send({"id": 1, "command": "endless", "stream": 1})
        self.assertEqual(worker.read_frame()["seq"], 0)
        worker.send({"id": 2, "command": "nap", "args": {"seconds": 0.3}})
        time.sleep(0.05)
        worker.close_stdin()
        replies = {r["id"]: r for r in (worker.read_frame(), worker.read_frame())}
        self.assertCancelled(replies[1], 1)
        self.assertEqual(replies[2]["result"], {"woke": True})
        self.assertExitCode(worker, 0)


if __name__ == "__main__":
    unittest.main()
