"""LMs per session in one worker: configure_lm in a session changes only that
session; without a session it sets the default LM, which serves anonymous
requests and sessions that configured none."""

import unittest

from worker_harness import WorkerTestCase


class SessionLMTest(WorkerTestCase):
    def setUp(self):
        self.worker = self.start_worker()
        for sid in ("s-one", "s-two", "s-none"):
            self.worker.call("create_program", {"id": "p", "signature": "q -> a"},
                             session_id=sid)

    def run_p(self, sid):
        return self.worker.call("execute_program", {"program_id": "p", "inputs": {"q": "x"}},
                                session_id=sid)

    def test_each_session_runs_on_its_own_lm(self):
        self.worker.call("configure_lm", {"provider": "mock", "model": "m-one"},
                         session_id="s-one")
        self.worker.call("configure_lm", {"provider": "mock", "model": "m-two"},
                         session_id="s-two")
        for _ in range(3):
            self.assertEqual(self.run_p("s-one")["lm"], "mock/m-one")
            self.assertEqual(self.run_p("s-two")["lm"], "mock/m-two")
        # A session without an LM has none until a default exists.
        error = self.worker.error("execute_program", {"program_id": "p", "inputs": {"q": "x"}},
                                  session_id="s-none")
        self.assertEqual(error["message"], "No LM is loaded")

    def test_the_default_serves_sessions_without_their_own(self):
        self.worker.call("configure_lm", {"provider": "mock", "model": "m-one"},
                         session_id="s-one")
        self.worker.call("configure_lm", {"provider": "mock", "model": "dflt"})
        self.assertEqual(self.run_p("s-none")["lm"], "mock/dflt")
        self.assertEqual(self.run_p("s-one")["lm"], "mock/m-one")
        info = self.worker.call("lm_info", session_id="s-one")
        self.assertEqual((info["lm"], info["configured"], info["default_configured"]),
                         ("mock/m-one", 1, 1))

    def test_cleanup_drops_the_session_lm(self):
        self.worker.call("configure_lm", {"provider": "mock", "model": "m-one"},
                         session_id="s-one")
        self.worker.call("cleanup_session", {"session_id": "s-one"})
        info = self.worker.call("lm_info", session_id="s-one")
        self.assertEqual((info["lm"], info["configured"]), (None, 0))

    def test_replace_swaps_a_definition_a_replay_brings(self):
        self.worker.call("configure_lm", {"provider": "mock"}, session_id="s-one")
        self.worker.call("create_program", {"id": "p", "signature": "q -> b", "replace": True},
                         session_id="s-one")
        self.assertIn("b", self.run_p("s-one")["outputs"])
        error = self.worker.error("create_program", {"id": "p", "signature": "q -> c"},
                                  session_id="s-one")
        self.assertEqual(error["type"], "ValueError")

    def test_secrets_stay_out_of_replies(self):
        reply = self.worker.call("configure_lm", {"provider": "openai", "model": "m",
                                                  "api_key": "sk-hidden-1"},
                                 session_id="s-one")
        self.assertNotIn("sk-hidden-1", repr(reply))
        self.assertNotIn("sk-hidden-1", repr(self.worker.call("lm_info", session_id="s-one")))
        self.assertNotIn("sk-hidden-1", repr(self.worker.call("get_stats")))


if __name__ == "__main__":
    unittest.main()
