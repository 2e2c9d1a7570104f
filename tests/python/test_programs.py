"""Programs (DSPex's bridge commands) and the deterministic mock LM."""

import os
import tempfile
import textwrap
import unittest

from dspex_worker.programs import Signature, build_messages, parse_outputs
from worker_harness import PYTHON_DIR, WorkerTestCase, worker_env

QA = {"inputs": [{"name": "question", "description": "what to answer"}],
      "outputs": [{"name": "answer"}]}


class SignatureTest(unittest.TestCase):
    def test_string_forms(self):
        self.assertEqual(Signature.parse("question -> answer").to_json(), {
            "inputs": [{"name": "question", "description": ""}],
            "outputs": [{"name": "answer", "description": ""}]})
        sig = Signature.parse("a, b -> c")
        self.assertEqual((sig.input_names, sig.output_names), (["a", "b"], ["c"]))
        sig = Signature.parse("question: str -> answer: int")
        self.assertEqual(sig.outputs[0].type, "int")

    def test_object_form_keeps_descriptions_and_accepts_bare_names(self):
        sig = Signature.parse({"inputs": ["context", {"name": "q", "description": "d"}],
                               "outputs": [{"name": "a"}]})
        self.assertEqual(sig.to_json()["inputs"],
                         [{"name": "context", "description": ""},
                          {"name": "q", "description": "d"}])

    def test_invalid_signatures(self):
        for spec in ("no arrow", "a -> b -> c", "a ->", "a -> a", "a b -> c",
                     {"inputs": []}, {"inputs": [], "outputs": [{"name": "1x"}]}, 42):
            with self.subTest(spec=spec):
                with self.assertRaises((ValueError, TypeError)):
                    Signature.parse(spec)


class ParseOutputsTest(unittest.TestCase):
    def test_field_lines_and_continuations(self):
        text = "reasoning: step one\nstep two\n**answer**: 42"
        self.assertEqual(parse_outputs(text, ["reasoning", "answer"]),
                         {"reasoning": "step one\nstep two", "answer": "42"})

    def test_single_output_falls_back_to_the_whole_text(self):
        self.assertEqual(parse_outputs("  Paris  ", ["answer"]), {"answer": "Paris"})

    def test_missing_field_of_several_is_an_error(self):
        with self.assertRaises(ValueError):
            parse_outputs("a: 1", ["a", "b"])

    def test_prompt_names_every_field(self):
        sig = Signature.parse(QA)
        messages = build_messages(sig, "Answer briefly.", {"question": "why?"})
        self.assertIn("Answer briefly.", messages[0]["content"])
        self.assertIn("question: what to answer", messages[0]["content"])
        self.assertIn("answer", messages[0]["content"])
        self.assertEqual(messages[1]["content"], "question: why?")


class ProgramCommandTest(WorkerTestCase):
    def setUp(self):
        self.worker = self.start_worker()

    def mock(self, **extra):
        return self.worker.call("configure_lm", {"provider": "mock", **extra})

    def test_create_returns_id_and_normalised_signature(self):
        result = self.worker.call("create_program", {"signature": QA, "description": "QA"})
        self.assertEqual(result["status"], "created")
        self.assertEqual(result["program_id"], "prog_1")
        self.assertEqual(result["signature"]["inputs"][0],
                         {"name": "question", "description": "what to answer"})
        second = self.worker.call("create_program", {"signature": "a -> b"})
        self.assertEqual(second["program_id"], "prog_2")

    def test_duplicate_id_in_one_session_is_a_value_error(self):
        self.worker.call("create_program", {"id": "qa", "signature": QA}, session_id="s")
        error = self.worker.error("create_program", {"id": "qa", "signature": QA}, session_id="s")
        self.assertEqual(error["type"], "ValueError")
        self.assertIn("'qa' already exists", error["message"])
        # The same id in another session (or the global namespace) is fine.
        self.worker.call("create_program", {"id": "qa", "signature": QA}, session_id="t")
        self.worker.call("create_program", {"id": "qa", "signature": QA})

    def test_invalid_signature_is_refused(self):
        error = self.worker.error("create_program", {"signature": "nothing here"})
        self.assertEqual(error["type"], "ValueError")
        self.assertEqual(self.worker.error("create_program", {})["type"], "ValueError")

    def test_execute_without_lm(self):
        self.worker.call("create_program", {"id": "qa", "signature": QA})
        error = self.worker.error("execute_program",
                                  {"program_id": "qa", "inputs": {"question": "q"}})
        self.assertEqual(error["type"], "RuntimeError")
        self.assertEqual(error["message"], "No LM is loaded")

    def test_execute_with_mock_lm(self):
        self.assertEqual(self.mock(), {"status": "configured", "provider": "mock",
                                       "model": "mock", "backend": "builtin"})
        self.worker.call("create_program", {"id": "qa", "signature": QA}, session_id="s")
        result = self.worker.call("execute_program",
                                  {"program_id": "qa", "inputs": {"question": "2+2?"}},
                                  session_id="s")
        self.assertEqual(result, {"outputs": {"answer": 'mock answer for {"question": "2+2?"}'},
                                  "program_id": "qa", "lm": "mock/mock"})

    def test_mock_streams_tokens_then_the_unary_result(self):
        self.mock(latency_ms=5)
        self.worker.call("create_program", {"id": "qa", "signature": "q -> a, b"})
        args = {"program_id": "qa", "inputs": {"q": "two words"}}
        unary = self.worker.call("execute_program", args)
        chunks, reply = self.worker.stream("execute_program", args, window=2)
        self.assertTrue(reply["success"], reply)
        self.assertEqual(reply["result"], unary)
        tokens = [c["token"] for c in chunks]
        self.assertGreater(len(tokens), 5)
        self.assertTrue(all(t.strip() and t == t.lstrip() for t in tokens), tokens)
        self.assertEqual("".join(tokens),
                         'a: mock a for {"q": "two words"}\nb: mock b for {"q": "two words"}')
        info = self.worker.call("get_program_info", {"program_id": "qa"})
        self.assertEqual(info["executions"], 2)

    def test_a_slow_mock_stream_is_cancelled_between_tokens(self):
        self.mock(latency_ms=60000)
        self.worker.call("create_program", {"id": "qa", "signature": QA})
        self.worker.send({"id": 50, "command": "execute_program", "stream": 4,
                          "args": {"program_id": "qa", "inputs": {"question": "q"}}})
        self.worker.assert_no_output(0.2)
        self.worker.send({"type": "cancel", "id": 50})
        reply = self.worker.read_frame()
        self.assertEqual((reply["id"], reply["error"]["type"]), (50, "cancelled"))
        info = self.worker.call("get_program_info", {"program_id": "qa"})
        self.assertEqual(info["executions"], 0)

    def test_mock_is_deterministic_across_calls_and_workers(self):
        other = self.start_worker(worker_id="t2")
        outputs = []
        for worker in (self.worker, self.worker, other):
            worker.call("configure_lm", {"provider": "mock"})
            worker.call("create_program", {"signature": "b, a -> x, y"}, session_id="s")
        for worker, pid in ((self.worker, "prog_1"), (self.worker, "prog_1"), (other, "prog_1")):
            outputs.append(worker.call("execute_program",
                                       {"program_id": pid, "inputs": {"a": 1, "b": "two"}},
                                       session_id="s")["outputs"])
        self.assertEqual(outputs[0], outputs[1])
        self.assertEqual(outputs[0], outputs[2])
        self.assertEqual(set(outputs[0]), {"x", "y"})
        different = self.worker.call("execute_program",
                                     {"program_id": "prog_1", "inputs": {"a": 2, "b": "two"}},
                                     session_id="s")["outputs"]
        self.assertNotEqual(different, outputs[0])

    def test_mock_responses_map(self):
        self.mock(model="fixed", responses={"answer": "forty-two"})
        self.worker.call("create_program", {"id": "qa", "signature": "question -> answer, note"})
        result = self.worker.call("execute_program",
                                  {"program_id": "qa", "inputs": {"question": "q"}})
        self.assertEqual(result["outputs"]["answer"], "forty-two")
        self.assertEqual(result["outputs"]["note"], 'mock note for {"question": "q"}')
        self.assertEqual(result["lm"], "mock/fixed")

    def test_missing_input_is_named(self):
        self.mock()
        self.worker.call("create_program", {"id": "p", "signature": "context, question -> answer"})
        error = self.worker.error("execute_program",
                                  {"program_id": "p", "inputs": {"context": "c"}})
        self.assertEqual(error["type"], "ValueError")
        self.assertIn("question", error["message"])
        self.assertNotIn("context", error["message"].split(":")[-1])

    def test_unknown_program(self):
        self.mock()
        error = self.worker.error("execute_program", {"program_id": "ghost", "inputs": {}},
                                  session_id="s")
        self.assertEqual(error["type"], "KeyError")
        self.assertEqual(error["message"], "program 'ghost' not found in session 's'")

    def test_programs_are_per_session(self):
        self.worker.call("create_program", {"id": "p", "signature": QA}, session_id="s1")
        error = self.worker.error("get_program_info", {"program_id": "p"}, session_id="s2")
        self.assertEqual(error["type"], "KeyError")
        self.assertEqual(self.worker.call("list_programs")["total_count"], 0)

    def test_list_programs(self):
        for name in ("p1", "p2", "p3"):
            self.worker.call("create_program", {"id": name, "signature": QA}, session_id="s")
        result = self.worker.call("list_programs", session_id="s")
        self.assertEqual(result["total_count"], 3)
        self.assertEqual([p["program_id"] for p in result["programs"]], ["p1", "p2", "p3"])
        self.assertEqual(result["programs"][0]["signature"]["outputs"][0]["name"], "answer")

    def test_program_info_counts_executions(self):
        self.mock()
        created = self.worker.call("create_program", {"id": "p", "signature": QA})
        for _ in range(3):
            self.worker.call("execute_program", {"program_id": "p", "inputs": {"question": "q"}})
        info = self.worker.call("get_program_info", {"program_id": "p"})
        self.assertEqual(info["executions"], 3)
        self.assertEqual(info["signature"], created["signature"])
        self.assertIsInstance(info["created_at"], float)

    def test_delete_program(self):
        self.worker.call("create_program", {"id": "p", "signature": QA})
        self.assertEqual(self.worker.call("delete_program", {"program_id": "p"}),
                         {"deleted": True, "program_id": "p"})
        self.assertEqual(self.worker.error("delete_program", {"program_id": "p"})["type"],
                         "KeyError")

    def test_cleanup_session_counts_and_stats(self):
        for name in ("a", "b"):
            self.worker.call("create_program", {"id": name, "signature": QA}, session_id="s")
        self.worker.call("create_program", {"id": "c", "signature": QA}, session_id="t")
        stats = self.worker.call("get_stats")
        self.assertEqual((stats["programs"], stats["sessions"]), (3, 2))
        self.assertEqual(self.worker.call("cleanup_session", {"session_id": "s"})["cleaned"], 2)
        self.assertEqual(self.worker.call("list_programs", session_id="s")["total_count"], 0)
        self.assertEqual(self.worker.call("list_programs", session_id="t")["total_count"], 1)

    def test_unknown_provider(self):
        error = self.worker.error("configure_lm", {"provider": "telepathy"})
        self.assertEqual(error["type"], "ValueError")


# A stand-in exposing the slice of DSPy's API the worker uses; it checks the
# worker's glue and routing, not DSPy itself (which cannot be installed here).
FAKE_DSPY = """
import contextlib

class LM:
    def __init__(self, model, **kwargs):
        self.model = model
        self.kwargs = kwargs

def InputField(desc=None):
    return ("input", desc)

def OutputField(desc=None):
    return ("output", desc)

class Signature:
    def __init__(self, fields, instructions=None):
        self.fields = fields
        self.instructions = instructions

class _Settings:
    lm = None

    @contextlib.contextmanager
    def context(self, lm=None):
        previous, self.lm = self.lm, lm
        try:
            yield
        finally:
            self.lm = previous

settings = _Settings()

class Predict:
    def __init__(self, signature):
        self.signature = signature

    def __call__(self, **inputs):
        outputs = [name for name, (_, field) in self.signature.fields.items()
                   if field[0] == "output"]
        return {name: f"dspy {name} by {settings.lm.model} "
                      f"({self.signature.instructions}) for {sorted(inputs.items())}"
                for name in outputs}
"""


class DspyBackendTest(WorkerTestCase):
    def test_real_lm_runs_through_dspy_predict_when_dspy_imports(self):
        with tempfile.TemporaryDirectory() as root:
            os.mkdir(os.path.join(root, "dspy"))
            with open(os.path.join(root, "dspy", "__init__.py"), "w") as module:
                module.write(textwrap.dedent(FAKE_DSPY))
            env = worker_env({"PYTHONPATH": PYTHON_DIR + os.pathsep + root})
            del env["DSPEX_DISABLE_DSPY"]
            worker = self.start_worker(env=env)
            configured = worker.call("configure_lm", {"provider": "openai", "model": "m1",
                                                      "base_url": "http://127.0.0.1:9"})
            self.assertEqual(configured["backend"], "dspy")
            worker.call("create_program", {"id": "qa", "signature": QA,
                                           "description": "Be brief."})
            result = worker.call("execute_program",
                                 {"program_id": "qa", "inputs": {"question": "q?"}})
            self.assertEqual(result["outputs"],
                             {"answer": "dspy answer by openai/m1 (Be brief.) "
                                        "for [('question', 'q?')]"})
            # The mock LM keeps the deterministic built-in predictor.
            self.assertEqual(worker.call("configure_lm", {"provider": "mock"})["backend"],
                             "builtin")


if __name__ == "__main__":
    unittest.main()
