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
        stub = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                length = int(self.headers.get("Content-Length", 0))
                stub.requests.append({"path": self.path,
                                      "headers": dict(self.headers),
                                      "body": json.loads(self.rfile.read(length))})
                time.sleep(stub.delay_s)
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


class OpenAIClientTest(WorkerTestCase):
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


if __name__ == "__main__":
    unittest.main()
