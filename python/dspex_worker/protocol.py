"""Wire protocol: 4-byte big-endian length frames carrying UTF-8 JSON.

Request: {"id": uint, "command": str, "session_id": str|null, "args": {...}}
         (the host writes the id first: a request whose args this side
         cannot parse is still answered by its id, see InvalidRequest),
         optionally "timeout_ms": number >= 0, "stream": int >= 1 and,
         with "stream", "stream_bytes": int >= 1
Reply:   {"id", "success": true, "result": any}
      or {"id", "success": false, "error": {"type", "message", "traceback"}}
Protocol 2 (docs/architecture.md, "Streams and cancellation"):
Chunk:   {"id":N,"type":"chunk","seq":S,"data":X}      worker -> host
Ack:     {"type":"ack","id":N,"seq":S}                  host -> worker
Cancel:  {"type":"cancel","id":N}                       host -> worker
Protocol 3 (docs/architecture.md, "Host calls"):
Call:    {"type":"call","id":N,"call":K,"target":T,"command":C,"args":A
          [,"timeout_ms":M][,"session":S]}              worker -> host
Result:  {"type":"result","call":K,"success":true,"result":R}
      or {"type":"result","call":K,"success":false,
          "error":{"type":CLASS,"message":M}}           host -> worker
Cancel a call: {"type":"cancel_call","call":K}          worker -> host

The reader keeps one growing bytearray and reads large chunks into a reused
buffer, so a small request costs one read syscall and no per-read allocation;
the benchmark's trivial "echo" is dominated by this loop.
"""

import json
import os
import re
import sys
import threading

DEFAULT_MAX_FRAME_BYTES = 64 * 1024 * 1024
HEADER_BYTES = 4
# Larger than the default Linux pipe capacity (64 KiB), so one read drains
# whatever the pipe holds.
READ_CHUNK_BYTES = 256 * 1024

# allow_nan=False: NaN/Infinity are not JSON and would break the host's
# parser; failing here turns them into a classified error reply instead.
_encoder = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"),
                            allow_nan=False)
# What _encode does with a str (ensure_ascii=False), without its method call.
encode_str = json.encoder.encode_basestring
_c_make_encoder = json.encoder.c_make_encoder


def _encode(obj):
    """_encoder.encode(obj), without the Python-level set-up iterencode
    repeats on each call (a third of a small reply's encoding on CPython
    3.11): the same C encoder, the same fresh cycle markers, default and
    allow_nan."""
    return "".join(_c_make_encoder({}, _encoder.default, encode_str, None, ":", ",",
                                   False, False, False)(obj, 0))


if _c_make_encoder is None:  # a Python without the _json accelerator
    _encode = _encoder.encode

_decoder = json.JSONDecoder()
_full_decode = _decoder.decode
_scan_once = _decoder.scan_once


def _decode(text):
    """json.loads(text) for one frame: the scanner called directly when the
    text is exactly one value (what a host sends), which skips decode()'s two
    whitespace matches; anything else goes through decode() for its result
    or its error."""
    try:
        value, end = _scan_once(text, 0)
    except StopIteration:
        return _full_decode(text)
    if end != len(text):
        return _full_decode(text)
    return value


class FrameTooLarge(Exception):
    """An inbound header announced more bytes than --max-frame-bytes.

    The stream cannot be resynchronised after this: the bytes that follow are
    of unknown meaning, so the worker reports and exits.
    """

    def __init__(self, length, limit):
        super().__init__(
            f"frame of {length} bytes exceeds the limit of {limit} bytes")
        self.length = length
        self.limit = limit


class TruncatedFrame(EOFError):
    """The input ended in the middle of a frame (host died mid-write)."""

    def __init__(self, buffered):
        super().__init__(f"input ended inside a frame ({buffered} bytes buffered)")
        self.buffered = buffered


class ProtocolError(Exception):
    """A frame arrived intact but is not a valid request.

    request_id is the request's id when it could be read, else 0, so the host
    can still match the failure to its pending request where possible.
    error_type is the reply's error type.
    """

    error_type = "ProtocolError"

    def __init__(self, message, request_id=0):
        super().__init__(message)
        self.request_id = request_id


class InvalidRequest(ProtocolError):
    """The host's frame, but the caller's input in it cannot be taken here.

    Args nested deeper than Python's json can parse (RecursionError) are the
    caller's doing, not a broken stream: the request is answered by its id,
    read from the frame's prefix, with error type "invalid_request", which
    the host hands its caller as invalid_request (no worker fault, no
    breaker input), and the worker serves on.
    """

    error_type = "invalid_request"


class MalformedControl(Exception):
    """A cancel, ack or result frame (it has a "type") with a bad id, seq or
    body.

    Not a request, so there is nothing to answer: the worker logs it and
    reads on. call: the host call a result frame names (None: unreadable),
    which then fails with error_class instead of waiting for an answer that
    will not come.
    """

    def __init__(self, message, call=None, error_class="protocol_error"):
        super().__init__(message)
        self.call = call
        self.error_class = error_class


# The host's request prefix: {"id":N, (bridge/protocol.cpp writes it first).
_ID_PREFIX = re.compile(rb'\{"id":(0|[1-9][0-9]{0,19}),')


# The host's result frame prefix (bridge/protocol.cpp).
_RESULT_PREFIX = re.compile(rb'\{"type":"result","call":(0|[1-9][0-9]{0,19}),')


def request_id_of(payload):
    """The id at the start of a request frame, or None when it has no such prefix."""
    match = _ID_PREFIX.match(payload)
    if match is None:
        return None
    request_id = int(match.group(1))
    return request_id if request_id < 1 << 64 else None


# Payloads up to this size are joined to their header and written at once;
# bigger ones go by writev, which copies nothing in user space.
JOIN_BYTES = 64 * 1024


class Channel:
    """The worker's end of the protocol: a private input and output fd.

    The fds are blocking; EINTR is retried by Python itself (PEP 475) unless a
    signal handler raises, which is exactly how SIGTERM interrupts a read.
    """

    def __init__(self, in_fd, out_fd, max_frame_bytes=DEFAULT_MAX_FRAME_BYTES):
        self.in_fd = in_fd
        self.out_fd = out_fd
        self.max_frame_bytes = max_frame_bytes
        self._buf = bytearray()
        self._chunk = bytearray(READ_CHUNK_BYTES)
        self._chunk_view = memoryview(self._chunk)
        # Request threads (max_concurrency > 1) write their own replies; a
        # stream's loop (worker.py) writes its chunks under it too.
        self.write_lock = threading.Lock()

    # -- input ---------------------------------------------------------------

    def read_frame(self):
        """Return the next frame's payload (a bytearray), or None on a clean EOF.

        Raises FrameTooLarge or TruncatedFrame.
        """
        buf = self._buf
        while True:
            size = len(buf)
            if size >= HEADER_BYTES:
                length = int.from_bytes(buf[:HEADER_BYTES], "big")
                if length > self.max_frame_bytes:
                    raise FrameTooLarge(length, self.max_frame_bytes)
                end = HEADER_BYTES + length
                if size >= end:
                    # A bytearray slice: one copy, where bytes() would add a
                    # second (1 MiB payloads are a benchmark case).
                    payload = buf[HEADER_BYTES:end]
                    # Deleting a bytearray's prefix is O(1) in CPython.
                    del buf[:end]
                    return payload
            n = os.readv(self.in_fd, [self._chunk])
            if n == 0:
                if buf:
                    raise TruncatedFrame(len(buf))
                return None
            buf += self._chunk_view[:n]

    # -- output --------------------------------------------------------------

    def write_frame(self, payload):
        size = len(payload)
        if size > JOIN_BYTES:         # no copy of a big payload: writev
            self._write_all([size.to_bytes(HEADER_BYTES, "big"), payload])
            return
        # One joined write: a stream's chunks are small and many, and this is
        # their cost per chunk (issue 24's chunk floor).
        data = size.to_bytes(HEADER_BYTES, "big") + payload
        with self.write_lock:
            written = os.write(self.out_fd, data)
            if written != len(data):
                self.write_rest_locked(data, written)

    def write_rest_locked(self, data, written):
        """The rest of data after a partial write, write_lock held."""
        rest = memoryview(data)[written:]
        while rest:
            rest = rest[os.write(self.out_fd, rest):]

    def write_raw(self, data):
        """Write bytes that are not a frame: only fault injection wants this."""
        self._write_all([data])

    def _write_all(self, parts):
        with self.write_lock:
            self._write_all_locked(parts)

    def _write_all_locked(self, parts):
        total = sum(map(len, parts))
        written = os.writev(self.out_fd, parts)
        if written == total:
            return
        # A pipe accepts a large write piecewise; finish the remainder.
        rest = memoryview(b"".join(parts))[written:]
        while rest:
            rest = rest[os.write(self.out_fd, rest):]


# -- encoding ----------------------------------------------------------------

class Request:
    """One decoded request frame. stream: the credit window (None: unary);
    stream_bytes: its byte window (None: none); timeout_ms: what is left of
    the caller's deadline (None: none)."""

    __slots__ = ("id", "command", "args", "session_id", "stream", "timeout_ms",
                 "stream_bytes")

    def __init__(self, request_id, command, args, session_id, stream, timeout_ms,
                 stream_bytes=None):
        self.id = request_id
        self.command = command
        self.args = args
        self.session_id = session_id
        self.stream = stream
        self.timeout_ms = timeout_ms
        self.stream_bytes = stream_bytes


def decode_request(payload):
    """Parse one request frame into (id, command, args, session_id)."""
    message = decode_message(payload)
    if not isinstance(message, Request):
        raise ProtocolError("request needs a string \"command\"", message[1])
    return message.id, message.command, message.args, message.session_id


def decode_message(payload):
    """A Request, or ("cancel", id, None) / ("ack", id, seq) /
    ("result", call, (True, result) or (False, (class, message))) for a
    control frame (an object with "type" "cancel", "ack" or "result" and no
    "command").

    Raises ProtocolError (a bad request) or MalformedControl.
    """
    try:
        message = _decode(payload.decode("utf-8"))
    except ValueError as exc:  # JSONDecodeError and UnicodeDecodeError
        raise ProtocolError(f"request is not valid UTF-8 JSON: {exc}") from None
    except RecursionError:
        request_id = request_id_of(payload)
        result = _RESULT_PREFIX.match(payload) if request_id is None else None
        if result is not None:      # its call fails; the worker serves on
            raise MalformedControl(
                "result nests deeper than the worker's JSON parser takes (Python's "
                f"recursion limit, {sys.getrecursionlimit()})", int(result.group(1)),
                "result_too_deep") from None
        if request_id is None:
            raise ProtocolError("request JSON is nested too deeply") from None
        raise InvalidRequest(
            "request args nest deeper than the worker's JSON parser takes "
            f"(Python's recursion limit, {sys.getrecursionlimit()})",
            request_id) from None
    if not isinstance(message, dict):
        raise ProtocolError("request must be a JSON object")
    if "command" not in message and message.get("type") in _CONTROL_TYPES:
        return _control(message)
    request_id = message.get("id")
    # bool is an int subclass; true/false is not an id.
    if type(request_id) is not int or request_id < 0:
        raise ProtocolError("request needs a non-negative integer \"id\"")
    command = message.get("command")
    if not isinstance(command, str):
        raise ProtocolError("request needs a string \"command\"", request_id)
    args = message.get("args")
    if args is None:
        args = {}
    elif not isinstance(args, dict):
        raise ProtocolError("request \"args\" must be a JSON object", request_id)
    session_id = message.get("session_id")
    if session_id is not None and not isinstance(session_id, str):
        raise ProtocolError("request \"session_id\" must be a string or null",
                            request_id)
    stream = message.get("stream")
    if stream is not None and (type(stream) is not int or stream < 1):
        raise ProtocolError("request \"stream\" must be an integer >= 1",
                            request_id)
    stream_bytes = message.get("stream_bytes")
    if stream_bytes is not None and (type(stream_bytes) is not int or stream_bytes < 1):
        raise ProtocolError("request \"stream_bytes\" must be an integer >= 1",
                            request_id)
    timeout_ms = message.get("timeout_ms")
    if timeout_ms is not None and (type(timeout_ms) not in (int, float)
                                   or not timeout_ms >= 0):
        raise ProtocolError("request \"timeout_ms\" must be a number >= 0",
                            request_id)
    return Request(request_id, command, args, session_id, stream, timeout_ms,
                   stream_bytes)


_CONTROL_TYPES = ("cancel", "ack", "result")


def _control(message):
    kind = message["type"]
    if kind == "result":
        return _result(message)
    request_id = message.get("id")
    if type(request_id) is not int or request_id < 0:
        raise MalformedControl(f"{kind} frame needs a non-negative integer \"id\"")
    if kind == "cancel":
        return "cancel", request_id, None
    seq = message.get("seq")
    if type(seq) is not int or seq < 0:
        raise MalformedControl("ack frame needs a non-negative integer \"seq\"")
    return "ack", request_id, seq


def _result(message):
    call = message.get("call")
    if type(call) is not int or call < 0:
        raise MalformedControl("result frame needs a non-negative integer \"call\"")
    success = message.get("success")
    if success is True:
        return "result", call, (True, message.get("result"))
    if success is not False:
        raise MalformedControl(
            f"result frame of call {call} needs a boolean \"success\"", call)
    error = message.get("error")
    error_class = error.get("type") if isinstance(error, dict) else None
    if not isinstance(error_class, str) or not error_class:
        raise MalformedControl(
            f"result frame of call {call} needs an \"error\" object with a "
            "non-empty string \"type\"", call)
    text = error.get("message")
    return "result", call, (False, (error_class, "" if text is None else str(text)))


def encode_host_call(request_id, call, target, command, args, timeout_ms=None,
                     session=None, with_session=False):
    """A call frame ("session" only when with_session). Raises
    TypeError/ValueError (UnicodeEncodeError)/RecursionError for args that
    are not JSON."""
    frame = {"type": "call", "id": request_id, "call": call, "target": target,
             "command": command, "args": args}
    if timeout_ms is not None:
        frame["timeout_ms"] = timeout_ms
    if with_session:
        frame["session"] = session
    return _encode(frame).encode("utf-8")


def encode_cancel_call(call):
    return f'{{"type":"cancel_call","call":{call}}}'.encode("utf-8")


def encode_success(request_id, result):
    """Raises TypeError/ValueError when result is not representable as JSON."""
    return _encode({"id": request_id, "success": True,
                    "result": result}).encode("utf-8")


def encode_chunk(request_id, seq, data):
    """Raises TypeError/ValueError when data is not representable as JSON."""
    return (f'{{"id":{request_id},"type":"chunk","seq":{seq},"data":'
            f'{_encode(data)}}}').encode("utf-8")


def encode_failure(request_id, error_type, message, traceback_text=""):
    error = {"type": _clean(error_type), "message": _clean(message),
             "traceback": _clean(traceback_text)}
    return _encode({"id": request_id, "success": False,
                    "error": error}).encode("utf-8")


def _clean(text):
    # Lone surrogates (e.g. from surrogateescape-decoded bytes) cannot be
    # UTF-8 encoded, and a "\udcxx" escape is rejected by strict JSON parsers;
    # spell them out so the error path itself can never fail.
    return str(text).encode("utf-8", "backslashreplace").decode("utf-8")
