"""The agent pool's handler: a small ReAct loop (examples/agent).

Each step asks the session's LM for a thought and an action ("search[Paris]"),
runs the action as a host call and writes the observation into the
trajectory the next step sees, until the LM answers "finish[...]". Where a
tool runs is wiring, not agent code: a pool of the node ("pool:tools") or a
function the embedding program registered ("fn:add", main.cpp); a request
may reroute tools with its "tools" argument.
"""

import re

from dspex_worker import HostCallError, command, predict

TOOLS = {"search": "pool:tools", "add": "pool:tools"}
ACTION = re.compile(r"(\w+)\[(.*)\]", re.S)


@command("agent")
def agent(args, ctx):
    tools = {**TOOLS, **args.get("tools", {})}
    trajectory, steps = [], []
    for _ in range(args.get("max_steps", 8)):
        step = predict(ctx, "question, trajectory -> thought, action",
                       {"question": args["question"], "trajectory": "\n".join(trajectory)})
        action = ACTION.fullmatch(step["action"].strip())
        if action and action[1] == "finish":
            return {"answer": action[2], "steps": steps}
        target, observation = act(ctx, tools, action, step["action"])
        steps.append({"action": step["action"], "target": target, "observation": observation})
        trajectory += [f"Thought: {step['thought']}", f"Action: {step['action']}",
                       f"Observation: {observation}"]
    return {"answer": None, "steps": steps}


def act(ctx, tools, action, text):
    """Where the action ran and what it gave: the tool's result, or what
    went wrong (the LM sees a failure and goes on)."""
    target = tools.get(action[1]) if action else None
    if target is None:
        return None, f"error: no tool for {text!r}"
    try:
        return target, ctx.call(target, action[1], {"input": action[2]}, timeout=10)
    except HostCallError as exc:
        return target, f"error: {exc}"
