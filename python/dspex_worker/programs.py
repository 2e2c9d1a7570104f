"""Programs: DSPex's Python bridge. Signatures, per-session storage, execution.

A program is a signature (named input and output fields) plus an optional
description, stored under the request's session_id (null is a namespace of
its own). Executing one asks the worker's LM: through dspy.Predict when DSPy
drives a real LM, else through the built-in predictor below, which writes a
"field: value" prompt and parses the same form back.

The host's session registry keeps program definitions and LMs too and
replays them (configure_lm, create_program with "replace") onto a worker
that has not seen them, so everything here may be lost with the process.
"""

import json
import re
import threading
import time

from . import dspy_backend
from .lm import LMRequest
from .registry import NO_ARGS, CommandRegistry, check_args

PROGRAM_COMMANDS = CommandRegistry()

NO_LM_MESSAGE = "No LM is loaded"


# -- signatures ---------------------------------------------------------------

class Field:
    __slots__ = ("name", "description", "type")

    def __init__(self, name, description="", type=None):
        self.name = name
        self.description = description
        self.type = type

    def to_json(self):
        data = {"name": self.name, "description": self.description}
        if self.type is not None:
            data["type"] = self.type
        return data


class Signature:
    """Input and output fields, from either accepted form:

    - "question -> answer", "a, b -> c", "question: str -> answer" (DSPy's
      string form; a ": type" annotation is kept as the field's type);
    - {"inputs": [{"name", "description"?}, ...], "outputs": [...]} where a
      field may also be given as a bare name string.
    """

    def __init__(self, inputs, outputs):
        self.inputs = inputs
        self.outputs = outputs
        self._validate()

    @classmethod
    def parse(cls, spec):
        if isinstance(spec, str):
            return cls._parse_string(spec)
        if isinstance(spec, dict):
            return cls(_parse_field_list(spec.get("inputs", []), "inputs"),
                       _parse_field_list(spec.get("outputs"), "outputs"))
        raise TypeError("signature must be a string like \"question -> answer\" "
                        "or an object with \"inputs\" and \"outputs\"")

    @classmethod
    def _parse_string(cls, text):
        if text.count("->") != 1:
            raise ValueError(f"signature {text!r} must contain exactly one '->'")
        left, right = text.split("->")
        return cls(_parse_string_fields(left), _parse_string_fields(right))

    def _validate(self):
        if not self.outputs:
            raise ValueError("signature needs at least one output field")
        seen = set()
        for field in self.inputs + self.outputs:
            if field.name in seen:
                raise ValueError(f"signature field {field.name!r} appears twice")
            seen.add(field.name)

    @property
    def input_names(self):
        return [f.name for f in self.inputs]

    @property
    def output_names(self):
        return [f.name for f in self.outputs]

    def to_json(self):
        return {"inputs": [f.to_json() for f in self.inputs],
                "outputs": [f.to_json() for f in self.outputs]}


def _check_name(name):
    if not isinstance(name, str) or not name.isidentifier():
        raise ValueError(f"signature field name {name!r} is not an identifier")
    return name


def _parse_string_fields(text):
    fields = []
    for part in text.split(","):
        part = part.strip()
        if not part:
            continue
        name, _, type_name = part.partition(":")
        type_name = type_name.strip() or None
        fields.append(Field(_check_name(name.strip()), "", type_name))
    return fields


def _parse_field_list(items, key):
    if not isinstance(items, list):
        raise TypeError(f"signature {key!r} must be a list of fields")
    fields = []
    for item in items:
        if isinstance(item, str):
            fields.append(Field(_check_name(item)))
            continue
        if not isinstance(item, dict):
            raise TypeError(f"signature {key!r} entries must be names or objects")
        description = item.get("description") or ""
        if not isinstance(description, str):
            raise TypeError(f"description of field {item.get('name')!r} must be a string")
        type_name = item.get("type")
        fields.append(Field(_check_name(item.get("name")), description,
                            type_name if isinstance(type_name, str) else None))
    return fields


# -- built-in predictor -------------------------------------------------------

def build_messages(signature, description, inputs):
    """Chat messages asking for one "field: value" line per output field."""
    lines = [description or "Produce the output fields from the input fields.", ""]
    if signature.inputs:
        lines.append("Input fields:")
        lines.extend(_describe(f) for f in signature.inputs)
    lines.append("Output fields:")
    lines.extend(_describe(f) for f in signature.outputs)
    lines.append("")
    lines.append('Reply with one line per output field, in the form '
                 '"<field>: <value>", and nothing else.')
    user = "\n".join(f"{f.name}: {_as_text(inputs[f.name])}" for f in signature.inputs)
    return [{"role": "system", "content": "\n".join(lines)},
            {"role": "user", "content": user or "(no inputs)"}]


def _describe(field):
    return f"- {field.name}: {field.description}" if field.description else f"- {field.name}"


def _as_text(value):
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)


# "answer: 42", also tolerating markdown bold ("**answer**: 42") that chat
# models like to add.
_FIELD_LINE = re.compile(r"^\s*\**\s*([A-Za-z_]\w*)\s*\**\s*:\s?(.*)$")


def parse_outputs(text, output_names):
    """Read "field: value" lines back; later lines continue the current value.

    A single-output signature falls back to the whole text, as a model asked
    for one thing often answers with just that thing.
    """
    wanted = set(output_names)
    collected = {}
    current = None
    for line in text.splitlines():
        match = _FIELD_LINE.match(line)
        if match and match.group(1) in wanted and match.group(1) not in collected:
            current = match.group(1)
            collected[current] = [match.group(2)]
        elif current is not None:
            collected[current].append(line)
    outputs = {name: "\n".join(collected[name]).strip()
               for name in output_names if name in collected}
    missing = [name for name in output_names if name not in outputs]
    if missing:
        if len(output_names) == 1:
            return {output_names[0]: text.strip()}
        raise ValueError(f"LM reply lacks output field(s) {', '.join(missing)}: "
                         f"{text[:200]!r}")
    return outputs


# -- storage ------------------------------------------------------------------

class Program:
    __slots__ = ("program_id", "session_id", "signature", "description",
                 "created_at", "executions", "last_executed_at", "dspy_predictor")

    def __init__(self, program_id, session_id, signature, description):
        self.program_id = program_id
        self.session_id = session_id
        self.signature = signature
        self.description = description
        self.created_at = time.time()
        self.executions = 0
        self.last_executed_at = None
        self.dspy_predictor = None  # built on first DSPy execution

    def info(self):
        return {"program_id": self.program_id, "session_id": self.session_id,
                "signature": self.signature.to_json(),
                "description": self.description, "created_at": self.created_at,
                "executions": self.executions,
                "last_executed_at": self.last_executed_at}


class ProgramStore:
    """session_id (None allowed) -> {program_id -> Program}, in creation order.

    Thread-safe: request threads (max_concurrency > 1) read it while the
    protocol thread changes it.
    """

    def __init__(self):
        self._sessions = {}
        self._generated = 0
        self._lock = threading.RLock()

    def new_id(self, session_id):
        with self._lock:
            programs = self._sessions.get(session_id, {})
            while True:
                self._generated += 1
                program_id = f"prog_{self._generated}"
                # Skip ids a client chose itself (or the host replayed).
                if program_id not in programs:
                    return program_id

    def add(self, program):
        with self._lock:
            programs = self._sessions.setdefault(program.session_id, {})
            if program.program_id in programs:
                raise ValueError(f"Program with ID {program.program_id!r} already "
                                 f"exists in {_describe_session(program.session_id)}")
            programs[program.program_id] = program

    def has(self, session_id, program_id):
        with self._lock:
            return program_id in self._sessions.get(session_id, {})

    def get(self, session_id, program_id):
        with self._lock:
            program = self._sessions.get(session_id, {}).get(program_id)
            if program is None:
                raise KeyError(f"program {program_id!r} not found in "
                               f"{_describe_session(session_id)}")
            return program

    def remove(self, session_id, program_id):
        with self._lock:
            program = self.get(session_id, program_id)
            programs = self._sessions[session_id]
            del programs[program_id]
            if not programs:
                del self._sessions[session_id]
            return program

    def list(self, session_id):
        with self._lock:
            return list(self._sessions.get(session_id, {}).values())

    def drop_session(self, session_id):
        with self._lock:
            return len(self._sessions.pop(session_id, {}))

    def count(self):
        with self._lock:
            return sum(len(programs) for programs in self._sessions.values())

    def session_ids(self):
        with self._lock:
            return list(self._sessions)


def _describe_session(session_id):
    return "the global namespace" if session_id is None else f"session {session_id!r}"


# -- commands -------------------------------------------------------------------

def _program_id_arg(args):
    program_id = args.get("program_id")
    if not isinstance(program_id, str) or not program_id:
        raise ValueError("program_id must be a non-empty string")
    return program_id


# Each command's argument keys; any other is refused (invalid_args).
# create_program: "id" is DSPex's spelling, "program_id" every other
# command's; "replace" is what the host's replay sends.
CREATE_ARGS = frozenset({"signature", "description", "id", "program_id", "replace"})
EXECUTE_ARGS = frozenset({"program_id", "inputs"})
PROGRAM_ID_ARGS = frozenset({"program_id"})


@PROGRAM_COMMANDS.command("create_program")
def create_program(args, ctx):
    check_args("create_program", args, CREATE_ARGS)
    store = ctx.worker.programs
    if "signature" not in args:
        raise ValueError("create_program needs a \"signature\"")
    signature = Signature.parse(args["signature"])
    description = args.get("description") or ""
    if not isinstance(description, str):
        raise TypeError("description must be a string")
    # "id" is DSPex's spelling; "program_id" matches every other command.
    program_id = args.get("id", args.get("program_id"))
    if program_id is None:
        program_id = store.new_id(ctx.session_id)
    elif not isinstance(program_id, str) or not program_id:
        raise ValueError("program id must be a non-empty string")
    if args.get("replace") is True and store.has(ctx.session_id, program_id):
        store.remove(ctx.session_id, program_id)  # a replay of a newer definition
    store.add(Program(program_id, ctx.session_id, signature, description))
    return {"program_id": program_id, "status": "created",
            "signature": signature.to_json()}


@PROGRAM_COMMANDS.command("execute_program")
def execute_program(args, ctx):
    check_args("execute_program", args, EXECUTE_ARGS)
    worker = ctx.worker
    program = worker.programs.get(ctx.session_id, _program_id_arg(args))
    signature = program.signature
    inputs = _declared_inputs(signature, args.get("inputs"), f"program {program.program_id!r}")
    lm = _session_lm(ctx)

    if lm.dspy_lm is not None:
        if program.dspy_predictor is None:
            program.dspy_predictor = dspy_backend.make_predictor(
                signature, program.description)
        outputs = dspy_backend.predict(program.dspy_predictor, inputs,
                                       lm.dspy_lm, signature.output_names)
        return _executed(program, lm, outputs)
    request = LMRequest(build_messages(signature, program.description, inputs),
                        inputs, signature.output_names)
    if ctx.stream:
        # A generator: the worker sends each token as a chunk.
        return _stream_tokens(program, lm, request, ctx)
    text = lm.complete(request)
    return _executed(program, lm, parse_outputs(text, signature.output_names))


def predict(ctx, signature, inputs, description=""):
    """One prediction on the request's session LM, with no stored program:
    execute_program's path for a handler of its own (an agent's step).
    signature: "a, b -> c" or a Signature; returns {output field: text}."""
    if not isinstance(signature, Signature):
        signature = Signature.parse(signature)
    inputs = _declared_inputs(signature, inputs, "the signature")
    lm = _session_lm(ctx)
    if lm.dspy_lm is not None:
        return dspy_backend.predict(dspy_backend.make_predictor(signature, description),
                                    inputs, lm.dspy_lm, signature.output_names)
    request = LMRequest(build_messages(signature, description, inputs),
                        inputs, signature.output_names)
    return parse_outputs(lm.complete(request), signature.output_names)


def _declared_inputs(signature, inputs, what):
    """The signature's input fields of `inputs`, all of them: only declared
    inputs reach the LM, so extras cannot change the answer."""
    if inputs is None:
        inputs = {}
    if not isinstance(inputs, dict):
        raise TypeError("inputs must be an object mapping field -> value")
    missing = [name for name in signature.input_names if name not in inputs]
    if missing:
        raise ValueError(f"missing input field(s) for {what}: {', '.join(missing)}")
    return {name: inputs[name] for name in signature.input_names}


def _session_lm(ctx):
    lm = ctx.worker.lm_for(ctx.session_id)
    if lm is None:
        raise RuntimeError(NO_LM_MESSAGE)
    return lm


def _stream_tokens(program, lm, request, ctx):
    """Yields {"token": t} per token of the completion, then returns what
    the unary call returns (outputs parsed from the whole text)."""
    parts = []
    for token in lm.stream(request, ctx.sleep):
        parts.append(token)
        yield {"token": token}
    return _executed(program, lm,
                     parse_outputs("".join(parts), request.output_fields))


def _executed(program, lm, outputs):
    program.executions += 1
    program.last_executed_at = time.time()
    return {"outputs": outputs, "program_id": program.program_id, "lm": lm.name}


@PROGRAM_COMMANDS.command("list_programs")
def list_programs(args, ctx):
    check_args("list_programs", args, NO_ARGS)
    programs = [p.info() for p in ctx.worker.programs.list(ctx.session_id)]
    return {"programs": programs, "total_count": len(programs)}


@PROGRAM_COMMANDS.command("get_program_info")
def get_program_info(args, ctx):
    check_args("get_program_info", args, PROGRAM_ID_ARGS)
    return ctx.worker.programs.get(ctx.session_id, _program_id_arg(args)).info()


@PROGRAM_COMMANDS.command("delete_program")
def delete_program(args, ctx):
    check_args("delete_program", args, PROGRAM_ID_ARGS)
    program = ctx.worker.programs.remove(ctx.session_id, _program_id_arg(args))
    return {"deleted": True, "program_id": program.program_id}
