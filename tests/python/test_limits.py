"""--limits: parsed strictly, set before handler modules run, and a
MemoryError under memory_mb answered out_of_memory (python/dspex_worker/limits.py)."""

import os
import unittest

from worker_harness import WorkerTestCase, worker_env

from dspex_worker import limits

HANDLERS = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "handlers"))


class ParseTest(unittest.TestCase):
    def test_known_keys_and_positive_integers_only(self):
        self.assertEqual(limits.parse("memory_mb=256, cpu_seconds=5"),
                         {"memory_mb": 256, "cpu_seconds": 5})
        self.assertEqual(limits.parse(""), {})
        for bad in ("stack_mb=8", "memory_mb", "memory_mb=0", "open_files=-1", "cpu_seconds=x"):
            with self.assertRaises(ValueError, msg=bad):
                limits.parse(bad)


class WorkerLimitsTest(WorkerTestCase):
    def start(self, spec):
        env = worker_env({"PYTHONPATH": os.pathsep.join([worker_env()["PYTHONPATH"], HANDLERS])})
        return self.start_worker("--handlers", "limit_cmds", "--limits", spec, env=env)

    def test_limits_are_set_before_handlers_run(self):
        w = self.start("memory_mb=512,open_files=32")
        r = w.call("rlimits")
        self.assertEqual(r["as"], [512 << 20, 512 << 20])
        self.assertEqual(r["nofile"], [32, 32])

    def test_a_memory_error_under_memory_mb_is_out_of_memory_and_the_worker_answers_on(self):
        w = self.start("memory_mb=256")
        err = w.error("grow", {"mb_per_s": 400, "max_mb": 4000}, timeout=30)
        self.assertEqual(err["type"], "out_of_memory")
        self.assertIn("memory_mb", err["message"])
        self.assertEqual(w.call("ping")["status"], "ok")

    def test_a_bad_limits_option_is_a_command_line_error(self):
        w = self.start_worker("--limits", "stack_mb=8")
        self.assertEqual(w.wait(), 2)


if __name__ == "__main__":
    unittest.main()
