#!/usr/bin/env bash
# examples/agent both ways, as the README shows them: the C++ program (the
# agent's "add" tool a C++ function), then `dspex run agent.json` driven
# with `dspex exec` and `dspex status` on its control socket (every tool in
# the tool pool). Checks the answers, the targets each step ran on, and that
# no worker process outlives either node.
# Usage: agent_example_test.sh SOURCE_DIR AGENT_PROGRAM DSPEX
set -euo pipefail
src=$1
agent=$2
dspex=$3
work=$(mktemp -d /tmp/dspex-agent-XXXXXX)
node_pid=

fail() { echo "agent_example_test: $*" >&2; exit 1; }
no_workers_of() {  # a node's workers carry its run id (h<pid>-...)
  sleep 0.2
  if pgrep -af "dspex_worker.*--run-id h$1-"; then fail "worker processes outlived $2"; fi
}
cleanup() {
  if [ -n "$node_pid" ] && kill -0 "$node_pid" 2>/dev/null; then
    kill -TERM "$node_pid"; sleep 5; kill -KILL "$node_pid" 2>/dev/null || true
  fi
  rm -rf "$work"
}
trap cleanup EXIT
cd "$src"  # the config's handler_paths are relative to it
export DSPEX_PYTHON_PATH="$src/python"

echo "== the C++ program"
set +e
"$agent" examples/agent/agent.json >"$work/out.txt" 2>"$work/err.txt" &
pid=$!
wait $pid
rc=$?
set -e
cat "$work/out.txt"
[ $rc -eq 0 ] || { cat "$work/err.txt" >&2; fail "agent exited with $rc"; }
for line in 'search[Paris] -> pool:tools: "Paris has 2102650 inhabitants (2023)."' \
            'search[Lyon] -> pool:tools: "Lyon has 522250 inhabitants (2023)."' \
            'add[2102650, 522250] -> fn:add: 2624900' \
            'answer: 2624900' 'agent: ok'; do
  grep -qxF -- "$line" "$work/out.txt" || fail "missing output line: $line"
done
no_workers_of $pid "the C++ program"

echo "== dspex run, dspex exec"
sock="$work/agent.sock"
"$dspex" run examples/agent/agent.json --control "$sock" 2>"$work/run.txt" &
node_pid=$!
for _ in $(seq 600); do
  grep -q "dspex: running" "$work/run.txt" && break
  kill -0 $node_pid 2>/dev/null || { cat "$work/run.txt" >&2; fail "dspex run exited"; }
  sleep 0.1
done
grep -q "dspex: running" "$work/run.txt" || fail "dspex run did not become ready"
"$dspex" exec agent '{"question": "How many people live in Paris and Lyon together?"}' \
  --pool agent --session s1 --compact --control "$sock" >"$work/exec.json"
cat "$work/exec.json"
python3 - "$work/exec.json" <<'EOF'
import json, sys
reply = json.load(open(sys.argv[1]))
assert reply["ok"], reply
result = reply["result"]
assert result["answer"] == "2624900", result
assert [s["target"] for s in result["steps"]] == ["pool:tools"] * 3, result
assert result["steps"][2]["observation"] == 2624900, result
EOF
"$dspex" status --control "$sock" >"$work/status.txt"
grep -qE "^host calls: 0 in flight, 3 total" "$work/status.txt" \
  || { cat "$work/status.txt"; fail "status does not show the 3 host calls"; }
kill -TERM $node_pid
set +e
wait $node_pid
rc=$?
set -e
[ $rc -eq 0 ] || { cat "$work/run.txt" >&2; fail "dspex run exited with $rc"; }
no_workers_of $node_pid "dspex run"
node_pid=
echo "agent_example_test: ok"
