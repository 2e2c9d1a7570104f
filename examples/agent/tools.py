"""The tools pool's handlers: what the agent's actions run (examples/agent).

Plain commands: a tool is any command of any pool, so tools are written,
tested and scaled like any other handler.
"""

import re

from dspex_worker import command

FACTS = {"paris": "Paris has 2102650 inhabitants (2023).",
         "lyon": "Lyon has 522250 inhabitants (2023)."}


@command("search")
def search(args, ctx):
    return FACTS.get(args["input"].strip().lower(), f"no result for {args['input']!r}")


@command("add")
def add(args, ctx):
    """The sum of the numbers in the input ("2102650, 522250")."""
    return sum(int(n) for n in re.findall(r"-?\d+", args["input"]))
