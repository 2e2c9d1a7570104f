"""The OpenAI-compatible LM client, against a stub server on 127.0.0.1 only."""

import json
import socket
import threading
import time
import unittest
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from worker_harness import WorkerTestCase


class StubServer:
    """An OpenAI-compatible /chat/completions stub; behaviour set per test."""

    def __init__(self):
        self.requests = []
        self.status = 200
        self.body = None          # bytes to send instead of a completion
        self.content = "answer: stubbed"
        self.delay_s = 0.0
        # "stream": true: these server-sent event payloads (None: the
        # content's words as deltas, then [DONE]), event_delay_s apart.
        self.events = None
        self.event_delay_s = 0.0
        stub = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                length = int(self.headers.get("Content-Length", 0))
                body = json.loads(self.rfile.read(length))
                stub.requests.append({"path": self.path,
                                      "headers": dict(self.headers),
                                      "body": body})
                time.sleep(stub.delay_s)
                if body.get("stream") and stub.status == 200 and stub.body is None:
                    self.send_events()
                    return
                if stub.body is not None:
                    body = stub.body
                elif stub.status == 200:
                    body = json.dumps({"choices": [{"message": {
                        "role": "assistant", "content": stub.content}}]}).encode()
                else:
                    body = b'{"error": {"message": "stub failure"}}'
                try:
                    self.send_response(stub.status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)
                except OSError:
                    pass  # the client gave up (timeout test)

            def send_events(self):
                events = stub.events
                if events is None:
                    words = stub.content.split(" ")
                    events = [{"choices": [{"delta": {"role": "assistant"}}]}]
                    events += [{"choices": [{"delta": {"content": w + (" " if i < len(words) - 1 else "")}}]}
                               for i, w in enumerate(words)]
                    events += [{"choices": [{"delta": {}, "finish_reason": "stop"}]}, "[DONE]"]
                try:
                    self.send_response(200)
                    self.send_header("Content-Type", "text/event-stream")
                    self.end_headers()  # HTTP/1.0: the body ends when the connection closes
                    for event in events:
                        data = event if isinstance(event, str) else json.dumps(event)
                        self.wfile.write(f"data: {data}\n\n".encode())
                        self.wfile.flush()
                        time.sleep(stub.event_delay_s)
                except OSError:
                    pass

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever,
                                       kwargs={"poll_interval": 0.05}, daemon=True)
        self.thread.start()

    @property
    def base_url(self):
        return f"http://127.0.0.1:{self.server.server_address[1]}/v1"

    def close(self):
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(5)


class OpenAITestCase(WorkerTestCase):
    def setUp(self):
        self.stub = StubServer()
        self.addCleanup(self.stub.close)
        self.worker = self.start_worker()
        self.worker.call("create_program", {"id": "qa", "signature": "question -> answer"})

    def configure(self, **extra):
        args = {"provider": "openai", "model": "stub-model", "base_url": self.stub.base_url}
        args.update(extra)
        return self.worker.call("configure_lm", args)

    def execute(self):
        return self.worker.request("execute_program",
                                   {"program_id": "qa", "inputs": {"question": "capital?"}},
                                   timeout=10)


class OpenAIClientTest(OpenAITestCase):
    def test_success_posts_a_chat_completion(self):
        self.assertEqual(self.configure(api_key="sk-test", temperature=0.5, max_tokens=77),
                         {"status": "configured", "provider": "openai",
                          "model": "stub-model", "backend": "builtin"})
        reply = self.execute()
        self.assertTrue(reply["success"], reply)
        self.assertEqual(reply["result"]["outputs"], {"answer": "stubbed"})
        self.assertEqual(reply["result"]["lm"], "openai/stub-model")

        sent = self.stub.requests[0]
        self.assertEqual(sent["path"], "/v1/chat/completions")
        self.assertEqual(sent["headers"]["Authorization"], "Bearer sk-test")
        body = sent["body"]
        self.assertEqual((body["model"], body["temperature"], body["max_tokens"]),
                         ("stub-model", 0.5, 77))
        self.assertEqual([m["role"] for m in body["messages"]], ["system", "user"])
        self.assertIn("question: capital?", body["messages"][1]["content"])

    def test_no_api_key_sends_no_authorization(self):
        self.configure()
        self.assertTrue(self.execute()["success"])
        self.assertNotIn("Authorization", self.stub.requests[0]["headers"])

    def test_plain_text_answer_fills_a_single_output(self):
        self.stub.content = "Paris"
        self.configure()
        self.assertEqual(self.execute()["result"]["outputs"], {"answer": "Paris"})

    def test_http_500_is_a_classified_error(self):
        self.stub.status = 500
        self.configure()
        error = self.execute()["error"]
        self.assertEqual(error["type"], "LMHTTPError")
        self.assertIn("HTTP 500", error["message"])
        self.assertIn("stub failure", error["message"])
        self.assertEqual(self.worker.call("ping")["status"], "ok")

    def test_non_completion_body_is_a_classified_error(self):
        self.stub.body = b"<html>not json</html>"
        self.configure()
        self.assertEqual(self.execute()["error"]["type"], "LMResponseError")

    def test_connection_refused_is_a_classified_error(self):
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        # Nothing listens on the port once the probe is closed.
        self.configure(base_url=f"http://127.0.0.1:{port}/v1")
        error = self.execute()["error"]
        self.assertEqual(error["type"], "LMConnectionError")
        self.assertIn(str(port), error["message"])

    def test_timeout_is_a_classified_error(self):
        self.stub.delay_s = 1.5
        self.configure(timeout_s=0.3)
        error = self.execute()["error"]
        self.assertEqual(error["type"], "LMTimeoutError")


class OpenAIStreamTest(OpenAITestCase):
    """The same endpoint, called with a stream: "stream": true and SSE."""

    def stream(self):
        return self.worker.stream("execute_program",
                                  {"program_id": "qa", "inputs": {"question": "capital?"}},
                                  window=2, timeout=10)

    def test_tokens_arrive_as_chunks_then_the_parsed_result(self):
        self.stub.content = "answer: Paris is the capital"
        self.configure()
        chunks, reply = self.stream()
        self.assertEqual([c["token"] for c in chunks],
                         ["answer: ", "Paris ", "is ", "the ", "capital"])
        self.assertTrue(reply["success"], reply)
        self.assertEqual(reply["result"], {"outputs": {"answer": "Paris is the capital"},
                                           "program_id": "qa", "lm": "openai/stub-model"})
        sent = self.stub.requests[0]
        self.assertIs(sent["body"]["stream"], True)
        self.assertEqual(sent["headers"]["Accept"], "text/event-stream")
        # The unary call of the same program does not stream.
        self.assertTrue(self.execute()["success"])
        self.assertNotIn("stream", self.stub.requests[1]["body"])

    def test_http_error_on_a_stream(self):
        self.stub.status = 503
        self.configure()
        chunks, reply = self.stream()
        self.assertEqual(chunks, [])
        self.assertEqual(reply["error"]["type"], "LMHTTPError")
        self.assertIn("HTTP 503", reply["error"]["message"])

    def test_a_broken_event_is_a_response_error_after_the_good_ones(self):
        self.stub.events = [{"choices": [{"delta": {"content": "answer: x"}}]}, "{not json"]
        self.configure()
        chunks, reply = self.stream()
        self.assertEqual(chunks, [{"token": "answer: x"}])
        self.assertEqual(reply["error"]["type"], "LMResponseError")

    def test_a_server_that_ignores_stream_gives_one_chunk(self):
        self.stub.body = json.dumps({"choices": [{"message": {"content": "answer: whole"}}]}).encode()
        self.configure()
        chunks, reply = self.stream()
        self.assertEqual(chunks, [{"token": "answer: whole"}])
        self.assertEqual(reply["result"]["outputs"], {"answer": "whole"})

    def test_a_slow_stream_times_out(self):
        self.stub.event_delay_s = 1.5
        self.configure(timeout_s=0.3)
        chunks, reply = self.stream()
        self.assertEqual(reply["error"]["type"], "LMTimeoutError")

    def test_cancel_mid_stream(self):
        self.stub.content = "answer: " + "word " * 50
        self.stub.event_delay_s = 0.05
        self.configure()
        self.worker.send({"id": 77, "command": "execute_program", "stream": 100,
                          "args": {"program_id": "qa", "inputs": {"question": "q"}}})
        self.assertEqual(self.worker.read_frame(timeout=10)["type"], "chunk")
        self.worker.send({"type": "cancel", "id": 77})
        while True:
            frame = self.worker.read_frame(timeout=10)
            if frame.get("type") != "chunk":
                break
        self.assertEqual((frame["id"], frame["error"]["type"]), (77, "cancelled"))


if __name__ == "__main__":
    unittest.main()
