"""Built-in commands refuse argument keys they do not take (invalid_args).

configure_lm first: a key it does not know (api_base, what DSPy and litellm
call base_url) must fail the call and send nothing anywhere, neither to the
server the caller meant nor to the default endpoint.
"""

import os
import socket
import tempfile
import textwrap
import threading
import unittest

from worker_harness import WorkerTestCase, wait_until, worker_env

# Every built-in command (with --fault-injection) and the argument keys it
# takes; None: any (echo answers its whole args). A new built-in fails
# test_every_builtin_is_listed until it is added here (and to the docs).
ACCEPTED = {
    "ping": set(),
    "echo": None,
    "get_stats": set(),
    "shutdown": set(),
    "cleanup_session": {"session_id"},
    "list_commands": set(),
    "configure_lm": {"provider", "model", "responses", "latency_ms", "script", "api_key",
                     "base_url", "temperature", "max_tokens", "timeout_s", "timeout"},
    "lm_info": set(),
    "create_program": {"signature", "description", "id", "program_id", "replace"},
    "execute_program": {"program_id", "inputs"},
    "list_programs": set(),
    "get_program_info": {"program_id"},
    "delete_program": {"program_id"},
    "fault_exit": {"code"},
    "fault_abort": set(),
    "fault_hang": set(),
    "fault_sleep": {"seconds"},
    "fault_gather": {"parties", "timeout_s", "name"},
    "fault_garbage": {"bytes"},
    "fault_oversized": {"length"},
    "fault_print": {"text"},
    "fault_alloc": {"mb", "hold"},
    "fault_partial": set(),
    "fault_raise": {"message"},
    "fault_echo": {"payload"},
    "fault_nest": {"depth"},
}


def accepted_text(command, keys):
    if not keys:
        return f"{command} takes no arguments"
    return "accepted: " + ", ".join(sorted(keys))


class CountingListener:
    """A TCP socket on loopback that accepts, counts and closes connections."""

    def __init__(self):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.sock.settimeout(0.05)
        self.connections = 0
        self._stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    @property
    def port(self):
        return self.sock.getsockname()[1]

    def _run(self):
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except (socket.timeout, OSError):
                continue
            self.connections += 1
            conn.close()

    def close(self):
        self._stop.set()
        self.thread.join(5)
        self.sock.close()


class StrictBuiltinsTest(WorkerTestCase):
    def setUp(self):
        self.worker = self.start_worker("--fault-injection")

    def test_every_builtin_is_listed(self):
        self.assertEqual(set(self.worker.call("list_commands")["commands"]), set(ACCEPTED))

    def test_an_unknown_key_is_invalid_args_naming_it_and_the_accepted_ones(self):
        pid = self.worker.call("ping")["pid"]
        for command, keys in sorted(ACCEPTED.items()):
            if keys is None:
                continue
            with self.subTest(command=command):
                error = self.worker.error(command, {"bogus_key": 1})
                self.assertEqual(error["type"], "invalid_args")
                message = error["message"]
                self.assertTrue(message.startswith(f"{command}: unknown argument 'bogus_key'"),
                                message)
                self.assertIn(accepted_text(command, keys), message)
                self.assertEqual(error["traceback"], "")
        # The refusal comes before the command does anything: no fault fired,
        # no shutdown, the same process serves on.
        self.assertEqual(self.worker.call("ping")["pid"], pid)

    def test_the_accepted_keys_are_taken(self):
        # The keys the table lists are not refused (other errors may follow:
        # the values here are only placeholders).
        for command, keys in sorted(ACCEPTED.items()):
            if not keys or command.startswith("fault_") or command == "shutdown":
                continue
            with self.subTest(command=command):
                reply = self.worker.request(command, {k: None for k in keys})
                if not reply["success"]:
                    self.assertNotEqual(reply["error"]["type"], "invalid_args", reply)

    def test_several_unknown_keys_are_all_named(self):
        error = self.worker.error("get_program_info", {"program_id": "p", "zeta": 1, "alpha": 2})
        self.assertEqual(error["type"], "invalid_args")
        self.assertIn("unknown arguments 'alpha', 'zeta'", error["message"])

    def test_echo_answers_its_whole_args(self):
        args = {"payload": [1, {"a": None}], "other": "x", "n": 3}
        self.assertEqual(self.worker.call("echo", args), args)
        self.assertEqual(self.worker.call("echo", {}), {})

    def test_a_refused_configure_lm_leaves_no_lm(self):
        error = self.worker.error("configure_lm", {"provider": "mock", "modle": "m"}, session_id="s")
        self.assertEqual(error["type"], "invalid_args")
        self.assertIsNone(self.worker.call("lm_info", session_id="s")["lm"])


class ConfigureLmConnectsNowhereTest(WorkerTestCase):
    """configure_lm with api_base: refused; nothing connects to the server it
    names nor to the default endpoint (api.openai.com, reachable here only
    through a counting proxy, so an attempt would be seen, not sent out)."""

    def setUp(self):
        self.target = CountingListener()
        self.addCleanup(self.target.close)
        self.proxy = CountingListener()
        self.addCleanup(self.proxy.close)
        proxy_url = f"http://127.0.0.1:{self.proxy.port}"
        self.worker = self.start_worker(env=worker_env({
            "https_proxy": proxy_url, "HTTPS_PROXY": proxy_url,
            "http_proxy": proxy_url, "HTTP_PROXY": proxy_url,
            "OPENAI_API_KEY": "sk-test-not-a-key"}))
        self.worker.call("create_program", {"id": "qa", "signature": "question -> answer"},
                         session_id="s")

    def execute(self):
        return self.worker.request("execute_program",
                                   {"program_id": "qa", "inputs": {"question": "q?"}},
                                   session_id="s", timeout=15)

    def test_api_base_is_refused_naming_base_url_and_nothing_connects(self):
        api_base = f"http://127.0.0.1:{self.target.port}/v1"
        for provider in ("openai", "mock"):
            with self.subTest(provider=provider):
                error = self.worker.error("configure_lm", {
                    "provider": provider, "model": "m", "api_key": "sk-secret",
                    "api_base": api_base}, session_id="s")
                self.assertEqual(error["type"], "invalid_args")
                self.assertIn("unknown argument 'api_base'", error["message"])
                self.assertIn("use 'base_url' instead of 'api_base'", error["message"])
                self.assertNotIn("sk-secret", error["message"])
        # No LM was set: the program cannot run, so nothing is sent.
        reply = self.execute()
        self.assertFalse(reply["success"])
        self.assertIn("No LM is loaded", reply["error"]["message"])
        self.assertEqual((self.target.connections, self.proxy.connections), (0, 0))

    def test_the_listeners_would_have_seen_a_request(self):
        # The control: a base_url that names the target reaches it, and the
        # default endpoint reaches the proxy; each fails (the listeners close
        # at once) but is counted.
        self.worker.call("configure_lm", {
            "provider": "openai", "model": "m", "timeout_s": 5,
            "base_url": f"http://127.0.0.1:{self.target.port}/v1"}, session_id="s")
        self.assertFalse(self.execute()["success"])
        self.assertTrue(wait_until(lambda: self.target.connections == 1))
        self.worker.call("configure_lm", {"provider": "openai", "model": "m", "timeout_s": 5},
                         session_id="s")
        self.assertFalse(self.execute()["success"])
        self.assertTrue(wait_until(lambda: self.proxy.connections == 1))


class UserInvalidArgsTest(WorkerTestCase):
    def test_a_handler_may_refuse_args_the_same_way(self):
        with tempfile.TemporaryDirectory() as directory:
            with open(os.path.join(directory, "strict_cmds.py"), "w") as module:
                module.write(textwrap.dedent("""
                    from dspex_worker import InvalidArgs, check_args, command

                    @command("greet")
                    def greet(args, ctx):
                        check_args("greet", args, frozenset({"name"}))
                        if not isinstance(args.get("name", ""), str):
                            raise InvalidArgs("greet: name must be a string")
                        return {"hello": args.get("name", "world")}
                """))
            worker = self.start_worker("--handlers", "strict_cmds", cwd=directory)
            self.assertEqual(worker.call("greet", {"name": "x"}), {"hello": "x"})
            error = worker.error("greet", {"nmae": "x"})
            self.assertEqual((error["type"], error["message"]),
                             ("invalid_args", "greet: unknown argument 'nmae'; accepted: name"))
            self.assertEqual(worker.error("greet", {"name": 1})["type"], "invalid_args")


if __name__ == "__main__":
    unittest.main()
