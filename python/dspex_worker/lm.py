"""LM clients: a deterministic mock and an OpenAI-compatible HTTP client.

An LM per session, set by configure_lm in that session; configure_lm
without a session sets the default LM, which serves anonymous requests and
sessions that configured none (the host replays each to a worker once). A client takes an LMRequest (chat messages plus the structured
inputs/outputs they were built from) and returns the completion text
(complete), or yields it piece by piece (stream); the predictor parses that
text, so the mock exercises the same parsing path as a real model.
"""

import contextlib
import json
import os
import re
import time

from . import dspy_backend
from .registry import NO_ARGS, CommandRegistry, check_args

LM_COMMANDS = CommandRegistry()

DEFAULT_OPENAI_BASE_URL = "https://api.openai.com/v1"
DEFAULT_OPENAI_MODEL = "gpt-4o-mini"
DEFAULT_TEMPERATURE = 0.0
DEFAULT_MAX_TOKENS = 1000
DEFAULT_TIMEOUT_S = 60.0
_ERROR_BODY_CHARS = 2000


# -- errors: their class names are what the host sees in a failed reply ------

class LMHTTPError(RuntimeError):
    """The endpoint answered with an HTTP error status."""


class LMConnectionError(ConnectionError):
    """The endpoint could not be reached."""


class LMTimeoutError(TimeoutError):
    """The endpoint did not answer within the configured timeout."""


class LMResponseError(ValueError):
    """The endpoint answered 2xx with a body that is not a chat completion."""


class LMRequest:
    __slots__ = ("messages", "inputs", "output_fields")

    def __init__(self, messages, inputs, output_fields):
        self.messages = messages            # [{"role", "content"}]
        self.inputs = inputs                # {name: value}
        self.output_fields = output_fields  # [name]


# What a ReAct trajectory writes before each tool result; the mock's
# script counts it to know which step of the loop a prompt is at.
SCRIPT_MARKER = "Observation:"


class MockLM:
    """Deterministic stand-in: no network, no randomness.

    Each output field gets responses[field] when configured, else
    "mock <field> for <inputs as sorted JSON>", so equal inputs always give
    equal outputs and different inputs give different ones. latency_ms
    makes each completion wait that long first (an endpoint's latency,
    without a network: the I/O-bound benchmark); a stream waits that long
    before each token.

    script drives a ReAct-style loop: step k (an object, output field ->
    text, over responses) answers a prompt that holds k observations
    (SCRIPT_MARKER k times in its messages), the last step any prompt past
    it. The step comes from the prompt, not from a counter, so concurrent
    requests on one worker each walk the script from its start.
    """

    provider = "mock"
    dspy_lm = None

    def __init__(self, model="mock", responses=None, latency_ms=0, script=None):
        if responses is not None and not isinstance(responses, dict):
            raise TypeError("responses must be an object mapping output field -> text")
        if latency_ms < 0:
            raise ValueError("latency_ms must not be negative")
        if script is not None and not (isinstance(script, list) and script
                                       and all(isinstance(s, dict) for s in script)):
            raise TypeError("script must be a non-empty list of objects "
                            "mapping output field -> text")
        self.model = model
        self.latency_s = latency_ms / 1000.0
        self.responses = dict(responses or {})
        self.script = list(script or [])
        self.calls = 0

    @property
    def name(self):
        return f"{self.provider}/{self.model}"

    def complete(self, request):
        self.calls += 1
        if self.latency_s:
            time.sleep(self.latency_s)
        return self._text(request)

    def stream(self, request, sleep=time.sleep):
        """The completion's tokens (words with their trailing whitespace),
        latency_ms before each; sleep: a cancellable wait (ctx.sleep)."""
        self.calls += 1
        for token in _TOKEN.findall(self._text(request)):
            if self.latency_s:
                sleep(self.latency_s)
            yield token

    def _text(self, request):
        inputs_json = json.dumps(request.inputs, sort_keys=True,
                                 ensure_ascii=False, default=str)
        responses = self.responses
        if self.script:
            responses = {**responses, **self.script[min(self.script_step(request),
                                                         len(self.script) - 1)]}
        lines = []
        for field in request.output_fields:
            value = responses.get(field)
            if value is None:
                value = f"mock {field} for {inputs_json}"
            elif not isinstance(value, str):
                value = json.dumps(value, ensure_ascii=False)
            lines.append(f"{field}: {value}")
        return "\n".join(lines)

    @staticmethod
    def script_step(request):
        """How many observations the prompt holds: the script's step."""
        return sum(m.get("content", "").count(SCRIPT_MARKER)
                   for m in request.messages if isinstance(m.get("content"), str))


class OpenAICompatibleLM:
    """POSTs to {base_url}/chat/completions of any OpenAI-compatible server."""

    provider = "openai"

    def __init__(self, model=DEFAULT_OPENAI_MODEL, api_key=None,
                 base_url=DEFAULT_OPENAI_BASE_URL,
                 temperature=DEFAULT_TEMPERATURE, max_tokens=DEFAULT_MAX_TOKENS,
                 timeout_s=DEFAULT_TIMEOUT_S):
        self.model = model
        self.api_key = api_key
        self.base_url = base_url.rstrip("/")
        self.temperature = temperature
        self.max_tokens = max_tokens
        self.timeout_s = timeout_s
        self.calls = 0
        self.dspy_lm = None  # set when dspy is importable

    @property
    def name(self):
        return f"{self.provider}/{self.model}"

    @property
    def url(self):
        return self.base_url + "/chat/completions"

    def complete(self, request):
        with self._post(request, stream=False) as response:
            raw = response.read()
        return _completion_text(raw, self.url)

    def stream(self, request, sleep=None):
        """POST with "stream": true; yields each delta's content as the
        server-sent events arrive (sleep: unused, the mock's)."""
        with self._post(request, stream=True) as response:
            if not response.headers.get("Content-Type", "").startswith("text/event-stream"):
                # A server that ignored "stream": one whole completion.
                yield _completion_text(response.read(), self.url)
                return
            for line in response:
                if not line.startswith(b"data:"):
                    continue          # blank separators, comments, event names
                data = line[5:].strip()
                if data == b"[DONE]":
                    return
                content = _delta_content(data, self.url)
                if content:
                    yield content

    @contextlib.contextmanager
    def _post(self, request, stream):
        """The open response to a chat completion POST; every failure, while
        it opens and while it is read, as one of the LM error classes."""
        # Imported here: urllib.request costs tens of ms, and most workers
        # (mock LM, plain handlers) never need it.
        import socket
        import urllib.error
        import urllib.request

        self.calls += 1
        body = {"model": self.model, "messages": request.messages,
                "temperature": self.temperature, "max_tokens": self.max_tokens}
        if stream:
            body["stream"] = True
        headers = {"Content-Type": "application/json",
                   "Accept": "text/event-stream" if stream else "application/json"}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        http_request = urllib.request.Request(
            self.url, data=json.dumps(body).encode("utf-8"), headers=headers,
            method="POST")
        try:
            with urllib.request.urlopen(http_request, timeout=self.timeout_s) as response:
                yield response
        except urllib.error.HTTPError as exc:
            detail = _read_error_body(exc)
            raise LMHTTPError(f"POST {self.url} failed with HTTP {exc.code} "
                              f"{exc.reason}: {detail}") from None
        except urllib.error.URLError as exc:
            if isinstance(exc.reason, (socket.timeout, TimeoutError)):
                raise LMTimeoutError(f"POST {self.url} timed out after "
                                     f"{self.timeout_s} s") from None
            raise LMConnectionError(f"cannot reach {self.url}: {exc.reason}") from None
        except (socket.timeout, TimeoutError):
            raise LMTimeoutError(f"POST {self.url} timed out after "
                                 f"{self.timeout_s} s") from None
        except OSError as exc:  # connection reset mid-response, etc.
            raise LMConnectionError(f"POST {self.url} failed: {exc}") from None


def _read_error_body(exc):
    try:
        text = exc.read(_ERROR_BODY_CHARS).decode("utf-8", "replace")
    except Exception:
        return "(no body)"
    return text.strip() or "(empty body)"


def _completion_text(raw, url):
    try:
        reply = json.loads(raw)
        content = reply["choices"][0]["message"]["content"]
    except (ValueError, KeyError, IndexError, TypeError):
        snippet = raw[:200].decode("utf-8", "replace")
        raise LMResponseError(f"{url} did not return a chat completion: "
                              f"{snippet!r}") from None
    if not isinstance(content, str):
        raise LMResponseError(f"{url} returned a non-text message content")
    return content


def _delta_content(data, url):
    """choices[0].delta.content of one server-sent event ("" when absent)."""
    try:
        event = json.loads(data)
        choices = event["choices"]
        if not choices:       # a usage-only event
            return ""
        content = choices[0].get("delta", {}).get("content")
    except (ValueError, KeyError, IndexError, TypeError, AttributeError):
        snippet = data[:200].decode("utf-8", "replace")
        raise LMResponseError(f"{url} sent an event that is not a chat "
                              f"completion chunk: {snippet!r}") from None
    if content is None:
        return ""
    if not isinstance(content, str):
        raise LMResponseError(f"{url} streamed a non-text delta content")
    return content


# A token of the mock's stream: a word and the whitespace after it (and,
# for the first, any before it): the tokens join back into the text.
_TOKEN = re.compile(r"\s*\S+\s*")


# -- configuration -------------------------------------------------------------

# configure_lm's argument keys, whatever the provider: a key meant for the
# other provider is ignored (switching "provider" alone keeps a config valid),
# a key of neither is refused. The host's config checks a pool's default_lm
# against the same set (actors/node/config.cpp).
MOCK_ARGS = frozenset({"model", "responses", "latency_ms", "script"})
OPENAI_ARGS = frozenset({"model", "api_key", "base_url", "temperature",
                         "max_tokens", "timeout_s", "timeout"})
CONFIGURE_LM_ARGS = frozenset({"provider"}) | MOCK_ARGS | OPENAI_ARGS
# What other clients call our keys: refused, with the right name.
CONFIGURE_LM_HINTS = {"api_base": "base_url", "openai_api_base": "base_url",
                      "openai_api_key": "api_key",
                      "max_completion_tokens": "max_tokens"}


def lm_from_args(args):
    """Build a client from configure_lm's args (validated here, not later).

    An unknown key is refused before anything else: a misspelled base_url
    (api_base, as DSPy and litellm call it) must never send the request, and
    its API key, to the default endpoint instead.
    """
    check_args("configure_lm", args, CONFIGURE_LM_ARGS, CONFIGURE_LM_HINTS)
    provider = args.get("provider", "mock")
    if provider == "mock":
        return MockLM(model=_opt_str(args, "model", "mock"),
                      responses=args.get("responses"),
                      latency_ms=_opt_number(args, "latency_ms", 0),
                      script=args.get("script"))
    if provider == "openai":
        api_key = args.get("api_key") or os.environ.get("OPENAI_API_KEY")
        return OpenAICompatibleLM(
            model=_opt_str(args, "model", DEFAULT_OPENAI_MODEL),
            api_key=api_key,
            base_url=_opt_str(args, "base_url", DEFAULT_OPENAI_BASE_URL),
            temperature=_opt_number(args, "temperature", DEFAULT_TEMPERATURE),
            max_tokens=int(_opt_number(args, "max_tokens", DEFAULT_MAX_TOKENS)),
            timeout_s=_opt_number(args, "timeout_s",
                                  _opt_number(args, "timeout", DEFAULT_TIMEOUT_S)))
    raise ValueError(f"unknown LM provider {provider!r} (expected 'mock' or 'openai')")


def _opt_str(args, key, default):
    value = args.get(key)
    if value is None:
        return default
    if not isinstance(value, str) or not value:
        raise TypeError(f"{key} must be a non-empty string")
    return value


def _opt_number(args, key, default):
    value = args.get(key)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{key} must be a number")
    return value


@LM_COMMANDS.command("configure_lm")
def configure_lm(args, ctx):
    lm = lm_from_args(args)
    if lm.provider != "mock" and dspy_backend.available():
        lm.dspy_lm = dspy_backend.make_lm(lm)
    ctx.worker.set_lm(ctx.session_id, lm)
    return {"status": "configured", "provider": lm.provider, "model": lm.model,
            "backend": "dspy" if lm.dspy_lm is not None else "builtin"}


@LM_COMMANDS.command("lm_info")
def lm_info(args, ctx):
    """The LM this request's session runs on, and how often configure_lm
    reached this worker for it (secrets are never part of a reply)."""
    if args:
        check_args("lm_info", args, NO_ARGS)
    worker = ctx.worker
    lm = worker.lm_for(ctx.session_id)
    return {"lm": lm.name if lm is not None else None,
            "session_id": ctx.session_id,
            "configured": worker.lm_configured.get(ctx.session_id, 0),
            "default_configured": worker.lm_configured.get(None, 0)}
