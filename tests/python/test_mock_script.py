"""The mock LM's script (a ReAct loop asking for tools deterministically)
and predict (the session's LM from a handler, no stored program)."""

import threading
import unittest

from dspex_worker.lm import LMRequest, MockLM, lm_from_args
from dspex_worker.programs import build_messages, parse_outputs, Signature

from worker_harness import HandlerModuleTestCase

REACT = Signature.parse("question, trajectory -> thought, action")
SCRIPT = [{"thought": "look it up", "action": "search[Paris]"},
          {"thought": "add them", "action": "add[1, 2]"},
          {"action": "finish[3]"}]


def step(lm, trajectory):
    inputs = {"question": "q", "trajectory": trajectory}
    request = LMRequest(build_messages(REACT, "", inputs), inputs, REACT.output_names)
    return parse_outputs(lm.complete(request), REACT.output_names)


class MockScriptTest(unittest.TestCase):
    def test_each_observation_moves_one_step_and_the_last_step_stays(self):
        lm = lm_from_args({"provider": "mock", "script": SCRIPT,
                           "responses": {"thought": "default thought"}})
        trajectory = ""
        actions = []
        for _ in range(5):
            out = step(lm, trajectory)
            actions.append(out["action"])
            trajectory += f"Action: {out['action']}\nObservation: ok\n"
        self.assertEqual(actions, ["search[Paris]", "add[1, 2]", "finish[3]",
                                   "finish[3]", "finish[3]"])
        # A field the step leaves out falls back to responses.
        self.assertEqual(step(lm, "Observation: a\nObservation: b")["thought"],
                         "default thought")

    def test_the_step_comes_from_the_prompt_not_from_call_order(self):
        lm = MockLM(script=SCRIPT)
        results = {}

        def run(k):
            results[k] = step(lm, "Observation: x\n" * k)["action"]
        threads = [threading.Thread(target=run, args=(k % 3,)) for k in range(30)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        self.assertEqual(results, {0: "search[Paris]", 1: "add[1, 2]", 2: "finish[3]"})
        self.assertEqual(lm.calls, 30)

    def test_a_bad_script_is_refused(self):
        for bad in ([], {"action": "x"}, ["search[x]"], [{"action": "x"}, 3]):
            with self.subTest(script=bad), self.assertRaises(TypeError):
                lm_from_args({"provider": "mock", "script": bad})


class PredictTest(HandlerModuleTestCase):
    MODULES = {"react_step.py": """
        from dspex_worker import command, predict

        @command("react_step")
        def react_step(args, ctx):
            return predict(ctx, "question, trajectory -> thought, action", args)
        """}

    def test_a_handler_runs_the_session_lm_through_predict(self):
        worker = self.start_with("react_step")
        self.assertEqual(worker.error("react_step", {"question": "q", "trajectory": ""},
                                      session_id="s1")["message"], "No LM is loaded")
        worker.call("configure_lm", {"provider": "mock", "script": SCRIPT}, session_id="s1")
        out = worker.call("react_step", {"question": "q", "trajectory": "Observation: 1"},
                          session_id="s1")
        self.assertEqual(out, {"thought": "add them", "action": "add[1, 2]"})
        error = worker.error("react_step", {"question": "q"}, session_id="s1")
        self.assertEqual((error["type"], error["message"]),
                         ("ValueError", "missing input field(s) for the signature: trajectory"))


if __name__ == "__main__":
    unittest.main()
