"""An OpenAI-compatible HTTP server over the continuous-batching engine (aya_jax/serving.py).

    server = Server(engine, codec, model_name="aya-expanse-8b", eos_ids=eos, chat_template="auto")
    server.listen("127.0.0.1", 8000)    # serves in threads until server.shutdown()

Endpoints (the subset of the OpenAI API that evaluation tools use; request and response fields as OpenAI's):

* `GET /v1/models` — the one served model; `GET /health`.
* `POST /v1/chat/completions` — `messages` (system / user / assistant turns; text content or text parts) go
  through the model's chat template (`aya_jax.pretrained.encode_conversation`); `max_tokens` (or
  `max_completion_tokens`), `temperature` (default 1, as OpenAI's), `top_p`, `top_k` (an extension, as vLLM's),
  `n`, `seed`, `stop` (a string or up to 4), `logprobs` + `top_logprobs`, `stream` (server-sent events,
  `stream_options.include_usage`).
* `POST /v1/completions` — `prompt` as text, a list of texts, token ids or a list of token-id lists (what
  lm-evaluation-harness's `local-completions` sends); `logprobs` (alternatives per token), and `echo`, which
  returns the prompt before the completion and, with `logprobs`, the log-probability of every prompt token given
  those before it (the first has none) from one teacher-forced pass (aya_jax/evaluation/likelihood.py's scorer),
  so that log-likelihoods can be scored through the server. `max_tokens` 0 with `echo` scores without generating.

A choice ends at an EOS id of the model (not part of the text), at a stop string (cut from the text, as OpenAI
does; a streamed reply holds back any text that may be the start of one), or at `max_tokens`
(`finish_reason` "stop" / "length"). Every bad request — malformed JSON, an unknown model or path, a missing or
mistyped field, a value out of range, a prompt longer than the context — is answered with a 4xx and an
OpenAI-style body `{"error": {"message", "type", "param", "code"}}` whose `param` names the field, and the server
goes on serving. While shutting down, new requests get 503; those in flight finish.

Unsupported, refused by name rather than ignored: `presence_penalty` / `frequency_penalty` other than 0,
`logit_bias`, `suffix`, `best_of` other than `n`, tools / function calling, `echo` on an encoder-decoder model
(its prompt is the encoder's input, which it does not predict).
"""

from __future__ import annotations

import contextlib
import dataclasses
import http.server
import json
import logging
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

from aya_jax import pretrained, sampling, serving
from aya_jax.data import vocab

log = logging.getLogger(__name__)

MAX_BODY_BYTES = 32 << 20
MAX_STOPS = 4
MAX_N = 128
IDLE_TIMEOUT_S = 120
LISTEN_BACKLOG = 1024


class ApiError(Exception):
    """A request the server refuses: the HTTP status and the OpenAI error body's fields."""

    def __init__(self, status: int, message: str, param: str | None = None, code: str | None = None):
        super().__init__(message)
        self.status, self.message, self.param, self.code = status, message, param, code

    def body(self) -> dict[str, Any]:
        kind = {404: "not_found_error", 503: "service_unavailable"}.get(self.status, "invalid_request_error")
        return {"error": {"message": self.message, "type": kind, "param": self.param, "code": self.code}}


def _bad(param: str, message: str, code: str | None = None) -> ApiError:
    return ApiError(400, f"{param}: {message}", param, code)


# ============================================================================================================
# Request fields
# ============================================================================================================


def _field(body: dict[str, Any], name: str, kinds: tuple[type, ...], default: Any, what: str) -> Any:
    value = body.get(name, default)
    if value is None:
        return default
    # bool is an int in Python; a JSON true is never a valid number here
    if isinstance(value, bool) and bool not in kinds or not isinstance(value, kinds):
        raise _bad(name, f"expected {what}, got {json.dumps(value)[:80]}")
    return value


def _number(body, name, default, low=None, high=None, *, integer=False):
    value = _field(
        body, name, (int,) if integer else (int, float), default, "an integer" if integer else "a number"
    )
    if value is not None and ((low is not None and value < low) or (high is not None and value > high)):
        bounds = f"[{low}, {high}]" if high is not None else f">= {low}"
        raise _bad(
            name,
            f"must be in {bounds}, got {value}" if high is not None else f"must be {bounds}, got {value}",
        )
    return value


def _stops(body: dict[str, Any]) -> tuple[str, ...]:
    stop = body.get("stop")
    if stop is None:
        return ()
    stops = [stop] if isinstance(stop, str) else stop
    if not isinstance(stops, list) or not all(isinstance(s, str) for s in stops):
        raise _bad("stop", "expected a string or a list of strings")
    if len(stops) > MAX_STOPS:
        raise _bad("stop", f"at most {MAX_STOPS} stop strings, got {len(stops)}")
    return tuple(s for s in stops if s)


def _refuse_unsupported(body: dict[str, Any]) -> None:
    for name in ("presence_penalty", "frequency_penalty"):
        if _number(body, name, 0.0, -2.0, 2.0):
            raise _bad(name, "not supported by this server (only 0)")
    for name in ("logit_bias", "suffix", "tools", "functions", "tool_choice", "response_format"):
        if body.get(name) not in (None, {}, [], "", "none", {"type": "text"}):
            raise _bad(name, "not supported by this server")


@dataclasses.dataclass
class Sampling:
    """The sampling fields every generating endpoint shares."""

    max_tokens: int | None
    temperature: float
    top_p: float
    top_k: int
    n: int
    seed: int
    stops: tuple[str, ...]
    stream: bool
    include_usage: bool

    @classmethod
    def parse(cls, body: dict[str, Any], max_tokens_name: str = "max_tokens") -> Sampling:
        _refuse_unsupported(body)
        max_tokens = _number(body, max_tokens_name, None, 0, integer=True)
        n = _number(body, "n", 1, 1, MAX_N, integer=True)
        best_of = _number(body, "best_of", n, n, n, integer=True)
        del best_of
        options = _field(body, "stream_options", (dict,), {}, "an object")
        return cls(
            max_tokens=max_tokens,
            temperature=float(_number(body, "temperature", 1.0, 0.0, 2.0)),
            top_p=float(_number(body, "top_p", 1.0, 0.0, 1.0)),
            top_k=int(_number(body, "top_k", 0, -1, integer=True)),
            n=n,
            seed=int(_number(body, "seed", 0, 0, 2**32 - 1, integer=True)),
            stops=_stops(body),
            stream=bool(_field(body, "stream", (bool,), False, "true or false")),
            include_usage=bool(options.get("include_usage", False)),
        )


# ============================================================================================================
# Text of a choice: stop strings and streaming
# ============================================================================================================


class ChoiceText:
    """The reply text of one choice as tokens arrive: `add(token)` returns the text that is final (no stop
    string can still begin in it), `stopped` once a stop string appeared (the text is cut before it)."""

    def __init__(self, codec: Any, stops: tuple[str, ...]):
        self.text = vocab.IncrementalText(codec)
        self.stops, self.sent, self.stopped = stops, 0, False

    def _safe_end(self, text: str) -> int:
        """The end of the text no stop string can still start in: hold back the longest suffix that is a
        proper prefix of a stop string."""
        for k in range(min(len(text), max((len(s) for s in self.stops), default=1) - 1), 0, -1):
            if any(s.startswith(text[-k:]) for s in self.stops):
                return len(text) - k
        return len(text)

    def add(self, token: int) -> str:
        self.text.add(token)
        full = self.text.printed
        if self.stops:
            hits = [full.find(s, max(0, self.sent - len(s))) for s in self.stops]
            hits = [h for h in hits if h >= 0]
            if hits:
                end, self.stopped = min(hits), True
                out, self.sent = full[self.sent : end], end
                return out
            end = self._safe_end(full)
        else:
            end = len(full)
        out, self.sent = full[self.sent : end], max(self.sent, end)
        return out

    def flush(self) -> str:
        """At the end of a choice not stopped by a stop string: whatever was held back."""
        if self.stopped:
            return ""
        full = self.text.codec.decode(self.text.ids)
        out, self.sent = full[self.sent :], len(full)
        return out

    @property
    def final(self) -> str:
        return self.text.printed[: self.sent]


# ============================================================================================================
# The server
# ============================================================================================================


@dataclasses.dataclass
class Choice:
    index: int
    request: serving.Request
    text: ChoiceText
    tokens: list[int] = dataclasses.field(default_factory=list)
    log_probs: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    finish_reason: str | None = None
    want_logprobs: bool = False


class Server:
    """The HTTP front of one `serving.Engine` (module docstring)."""

    def __init__(
        self,
        engine: serving.Engine,
        codec: Any,
        *,
        model_name: str,
        eos_ids: tuple[int, ...],
        chat_template: str = "auto",
        default_max_tokens: int = 256,
        scorer: Any = None,
    ):
        self.engine, self.codec, self.model_name = engine, codec, model_name
        self.eos_ids, self.chat_template = tuple(eos_ids), chat_template
        self.default_max_tokens = int(default_max_tokens)
        self.scorer = scorer  # evaluation.likelihood.Scorer for echo + logprobs (None: refused)
        self.created = int(time.time())
        self.requests = 0
        self.errors = 0
        self._count_lock = threading.Lock()
        self._httpd: http.server.ThreadingHTTPServer | None = None
        self._connections: dict[Any, bool] = {}  # handler -> inside a request
        self._stopping = False
        self.encoder_decoder = engine.family.encoder_decoder
        pretrained.uses_chat_template(codec, chat_template, "config.serve.chat_template")  # checked now

    # -- HTTP plumbing -------------------------------------------------------------------------------------
    def listen(self, host: str, port: int) -> tuple[str, int]:
        """Bind and serve in a background thread; returns the bound (host, port) (port 0: any free one)."""
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            timeout = IDLE_TIMEOUT_S  # a kept-alive connection left idle this long is closed

            def setup(self):
                super().setup()
                with server._count_lock:
                    server._connections[self] = False

            def finish(self):
                with server._count_lock:
                    server._connections.pop(self, None)
                super().finish()

            def log_message(self, format, *args):  # noqa: A002 - the base class's name
                log.debug("%s %s", self.address_string(), format % args)

            def do_GET(self):  # noqa: N802 - the base class's name
                server._handle(self, "GET")

            def do_POST(self):  # noqa: N802
                server._handle(self, "POST")

        class HTTPServer(http.server.ThreadingHTTPServer):
            request_queue_size = LISTEN_BACKLOG  # the default 5 resets connections of a burst of clients

        httpd = HTTPServer((host, int(port)), Handler)
        httpd.daemon_threads = False  # shutdown waits for the requests in flight
        httpd.block_on_close = True
        self._httpd = httpd
        threading.Thread(target=httpd.serve_forever, name="aya_jax-http", daemon=True).start()
        return httpd.server_address[:2]

    def shutdown(self) -> None:
        """Stop accepting, let the engine finish what it admitted, wait for the handlers to write it. Kept-alive
        connections between requests are closed; one in a request is closed after its answer."""
        if self._httpd is not None:
            self._httpd.shutdown()
        with self._count_lock:
            self._stopping = True
            idle = [h for h, busy in self._connections.items() if not busy]
        for handler in idle:
            with contextlib.suppress(OSError):
                handler.connection.shutdown(socket.SHUT_RDWR)
        self.engine.close()
        if self._httpd is not None:
            self._httpd.server_close()

    def _handle(self, handler: http.server.BaseHTTPRequestHandler, method: str) -> None:
        with self._count_lock:
            self.requests += 1
            self._connections[handler] = True
        try:
            self._answer(handler, method)
        finally:
            with self._count_lock:
                self._connections[handler] = False
                if self._stopping:
                    handler.close_connection = True

    def _answer(self, handler: http.server.BaseHTTPRequestHandler, method: str) -> None:
        path = handler.path.split("?", 1)[0].rstrip("/")
        routes: dict[tuple[str, str], Callable[[dict[str, Any]], Any]] = {
            ("GET", "/v1/models"): lambda _: self._models(),
            ("GET", "/health"): lambda _: {"status": "ok"},
            ("POST", "/v1/chat/completions"): self._chat,
            ("POST", "/v1/completions"): self._completions,
        }
        try:
            route = routes.get((method, path))
            if route is None:
                if any(p == path for _, p in routes):
                    raise ApiError(405, f"{method} is not allowed on {path}")
                raise ApiError(404, f"no endpoint {path} (this server has /v1/models, /v1/chat/completions, "
                                    "/v1/completions)")  # fmt: skip
            body = self._body(handler) if method == "POST" else {}
            result = route(body)
            if isinstance(result, Iterator):
                self._send_events(handler, result)
            else:
                self._send_json(handler, 200, result)
        except ApiError as e:
            with self._count_lock:
                self.errors += 1
            self._send_json(handler, e.status, e.body())
        except (BrokenPipeError, ConnectionResetError):
            pass
        except Exception as e:  # noqa: BLE001 - a server answers every request, whatever failed
            log.exception("request failed")
            with self._count_lock:
                self.errors += 1
            self._send_json(handler, 500, ApiError(500, f"internal error: {type(e).__name__}: {e}").body())

    def _body(self, handler: http.server.BaseHTTPRequestHandler) -> dict[str, Any]:
        length = handler.headers.get("Content-Length")
        if length is None or not length.isdigit():
            raise ApiError(411, "the request needs a Content-Length header")
        if int(length) > MAX_BODY_BYTES:
            raise ApiError(413, f"request body of {length} bytes is over the limit of {MAX_BODY_BYTES}")
        raw = handler.rfile.read(int(length))
        try:
            body = json.loads(raw)
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise ApiError(400, f"the body is not valid JSON: {e}") from None
        if not isinstance(body, dict):
            raise ApiError(400, "the body must be a JSON object")
        model = body.get("model")
        if not isinstance(model, str):
            raise _bad("model", "required: the served model's name " + json.dumps(self.model_name))
        if model != self.model_name:
            raise ApiError(
                404, f"model: {model!r} is not served here (this server serves {self.model_name!r})", "model",
                "model_not_found",
            )  # fmt: skip
        return body

    def _send_json(self, handler, status: int, payload: Any) -> None:
        data = json.dumps(payload, ensure_ascii=False).encode()
        try:
            handler.send_response(status)
            handler.send_header("Content-Type", "application/json")
            handler.send_header("Content-Length", str(len(data)))
            handler.end_headers()
            handler.wfile.write(data)
        except (BrokenPipeError, ConnectionResetError):
            pass

    def _send_events(self, handler, events: Iterator[dict[str, Any]]) -> None:
        """Server-sent events: one `data: {json}` per chunk, then `data: [DONE]`. The first chunk is computed
        before the headers go out, so a request refused late still gets a proper error status."""
        first = next(events)
        handler.send_response(200)
        handler.send_header("Content-Type", "text/event-stream")
        handler.send_header("Cache-Control", "no-cache")
        handler.send_header("Connection", "close")
        handler.end_headers()
        handler.close_connection = True
        try:
            for chunk in _chain(first, events):
                handler.wfile.write(b"data: " + json.dumps(chunk, ensure_ascii=False).encode() + b"\n\n")
                handler.wfile.flush()
            handler.wfile.write(b"data: [DONE]\n\n")
            handler.wfile.flush()
        except (BrokenPipeError, ConnectionResetError):
            events.close()  # cancels the choices still running (the generator's finally)

    # -- endpoints ------------------------------------------------------------------------------------------
    def _models(self) -> dict[str, Any]:
        return {
            "object": "list",
            "data": [
                {"id": self.model_name, "object": "model", "created": self.created, "owned_by": "aya_jax",
                 "max_model_len": self.engine.max_len},
            ],
        }  # fmt: skip

    def _chat(self, body: dict[str, Any]) -> Any:
        messages = _field(body, "messages", (list,), None, "a list of messages")
        if not messages:
            raise _bad("messages", "required: a non-empty list of {role, content}")
        turns = []
        for i, m in enumerate(messages):
            if not isinstance(m, dict) or not isinstance(m.get("role"), str):
                raise _bad(f"messages[{i}]", "expected {role, content}")
            role = {"developer": "system"}.get(m["role"], m["role"])
            if role not in ("system", "user", "assistant"):
                raise _bad(f"messages[{i}].role", f"{m['role']!r} is not one of system, user, assistant")
            turns.append({"role": role, "content": _content(m.get("content"), f"messages[{i}].content")})
        if turns[-1]["role"] == "assistant":
            raise _bad(f"messages[{len(turns) - 1}].role", "the last message must be from the user")
        try:
            prompt = pretrained.encode_conversation(
                self.codec, turns, template=self.chat_template, encoder_decoder=self.encoder_decoder,
                field="config.serve.chat_template",
            )  # fmt: skip
        except ValueError as e:  # the template's own check: roles must alternate
            raise _bad("messages", str(e)) from None
        s = Sampling.parse(body, "max_completion_tokens" if "max_completion_tokens" in body else "max_tokens")
        want_logprobs = bool(_field(body, "logprobs", (bool,), False, "true or false"))
        top = _number(body, "top_logprobs", 0, 0, serving.MAX_TOP_LOGPROBS, integer=True)
        if top and not want_logprobs:
            raise _bad("top_logprobs", "needs logprobs: true")
        choices = self._start([prompt], s, top if want_logprobs else -1, "messages")
        meta = {"id": f"chatcmpl-{uuid.uuid4().hex}", "created": int(time.time()), "model": self.model_name}
        if s.stream:
            return self._chat_stream(choices, meta, s, len(prompt), want_logprobs)
        self._finish_all(choices)
        return {
            **meta,
            "object": "chat.completion",
            "choices": [
                {
                    "index": c.index,
                    "message": {"role": "assistant", "content": c.text.final},
                    "logprobs": {"content": c.log_probs} if want_logprobs else None,
                    "finish_reason": c.finish_reason,
                }
                for c in choices
            ],
            "usage": _usage(len(prompt), choices),
        }

    def _chat_stream(self, choices, meta, s: Sampling, prompt_tokens: int, want_logprobs: bool):
        base = {**meta, "object": "chat.completion.chunk"}
        try:
            for c in choices:
                yield {**base, "choices": [{"index": c.index, "delta": {"role": "assistant", "content": ""},
                                            "logprobs": None, "finish_reason": None}]}  # fmt: skip
            for c, text, entries, reason in self._interleave(choices):
                delta = {"content": text} if text else {}
                chunk = {"index": c.index, "delta": delta, "logprobs": None, "finish_reason": reason}
                if want_logprobs and entries:
                    chunk["logprobs"] = {"content": entries}
                if delta or reason or chunk["logprobs"]:
                    yield {**base, "choices": [chunk]}
            if s.include_usage:
                yield {**base, "choices": [], "usage": _usage(prompt_tokens, choices)}
        finally:
            for c in choices:
                c.request.cancel()

    def _completions(self, body: dict[str, Any]) -> Any:
        prompts, texts = self._prompts(body.get("prompt"))
        echo = bool(_field(body, "echo", (bool,), False, "true or false"))
        logprobs = _number(body, "logprobs", None, 0, serving.MAX_TOP_LOGPROBS, integer=True)
        s = Sampling.parse(body)
        if echo and self.encoder_decoder:
            raise _bad(
                "echo", "not available for an encoder-decoder model (its prompt is the encoder's input)"
            )
        if echo and logprobs is not None and self.scorer is None:
            raise _bad("echo", "this server was started without prompt scoring")
        if s.max_tokens == 0 and not echo:
            raise _bad("max_tokens", "must be >= 1 (0 only with echo: score the prompt without generating)")
        if s.stream and echo:
            raise _bad("stream", "not available with echo")
        meta = {"id": f"cmpl-{uuid.uuid4().hex}", "created": int(time.time()), "model": self.model_name}
        generate = s.max_tokens != 0
        choices = self._start(prompts, s, -1 if logprobs is None else logprobs, "prompt") if generate else []
        if s.stream:
            return self._completion_stream(choices, meta, s, sum(map(len, prompts)), logprobs is not None)
        echoed = self._echo(prompts, logprobs) if echo and logprobs is not None else None
        self._finish_all(choices)
        out = []
        for p in range(len(prompts)):
            for j in range(s.n):
                c = choices[p * s.n + j] if generate else None
                text = (texts[p] if echo else "") + (c.text.final if c else "")
                entry = {"index": p * s.n + j, "text": text, "logprobs": None,
                         "finish_reason": c.finish_reason if c else "length"}  # fmt: skip
                if logprobs is not None:
                    entries = (echoed[p] if echoed else []) + (c.log_probs if c else [])
                    entry["logprobs"] = _completion_logprobs(entries)
                out.append(entry)
        return {
            **meta, "object": "text_completion", "choices": out,
            "usage": _usage(sum(map(len, prompts)), choices),
        }  # fmt: skip

    def _completion_stream(self, choices, meta, s: Sampling, prompt_tokens: int, want_logprobs: bool):
        base = {**meta, "object": "text_completion"}
        try:
            for c, text, entries, reason in self._interleave(choices):
                chunk = {"index": c.index, "text": text, "logprobs": None, "finish_reason": reason}
                if want_logprobs and entries:
                    chunk["logprobs"] = _completion_logprobs(entries)
                if text or reason or chunk["logprobs"]:
                    yield {**base, "choices": [chunk]}
            if s.include_usage:
                yield {**base, "choices": [], "usage": _usage(prompt_tokens, choices)}
        finally:
            for c in choices:
                c.request.cancel()

    # -- shared ---------------------------------------------------------------------------------------------
    def _prompts(self, prompt: Any) -> tuple[list[list[int]], list[str]]:
        """`prompt` as token-id lists and their texts."""
        if isinstance(prompt, str):
            prompt = [prompt]
        if (
            isinstance(prompt, list)
            and prompt
            and all(isinstance(t, int) and not isinstance(t, bool) for t in prompt)
        ):
            prompt = [prompt]
        if not isinstance(prompt, list) or not prompt:
            raise _bad(
                "prompt", "required: a string, a list of strings, token ids or a list of token-id lists"
            )
        ids, texts = [], []
        vocab_size = self.engine.model.cfg.vocab_size
        for i, p in enumerate(prompt):
            if isinstance(p, str):
                ids.append(pretrained.encode_conversation(
                    self.codec, [{"role": "user", "content": p}], template="none",
                    encoder_decoder=self.encoder_decoder,
                ) if p else [])  # fmt: skip
                texts.append(p)
            elif isinstance(p, list) and all(isinstance(t, int) and not isinstance(t, bool) for t in p):
                bad = [t for t in p if not 0 <= t < vocab_size]
                if bad:
                    raise _bad(
                        f"prompt[{i}]", f"token id {bad[0]} is outside the vocabulary [0, {vocab_size})"
                    )
                ids.append(list(p))
                texts.append(self.codec.decode(p))
            else:
                raise _bad(f"prompt[{i}]", "expected a string or a list of token ids")
            if not ids[-1]:
                raise _bad(f"prompt[{i}]", "empty prompt")
        return ids, texts

    def _start(self, prompts: list[list[int]], s: Sampling, top_logprobs: int, field: str) -> list[Choice]:
        """Submit n choices per prompt; ApiError naming the field when one cannot run. top_logprobs < 0: no
        log-probs wanted."""
        choices: list[Choice] = []
        try:
            for p, prompt in enumerate(prompts):
                budget = self.engine.max_len - (1 if self.encoder_decoder else len(prompt))
                max_tokens = (
                    s.max_tokens if s.max_tokens is not None else min(self.default_max_tokens, budget)
                )
                for j in range(s.n):
                    request = serving.Request(
                        prompt=prompt, max_tokens=max_tokens, temperature=s.temperature, top_p=s.top_p,
                        top_k=max(s.top_k, 0), seed=s.seed, row_id=j, eos_ids=self.eos_ids,
                        top_logprobs=max(top_logprobs, 0),
                    )  # fmt: skip
                    self.engine.check(request)
                    text = ChoiceText(self.codec, s.stops)
                    choices.append(Choice(p * s.n + j, request, text, want_logprobs=top_logprobs >= 0))
            for c in choices:
                self.engine.submit(c.request)
        except sampling.SamplingError as e:
            for c in choices:
                c.request.cancel()
            name, _, message = str(e).partition(": ")
            param = field if name == "prompt" else name
            code = "context_length_exceeded" if name in ("prompt", "max_tokens") else None
            raise ApiError(400, f"{param}: {message}", param, code) from None
        except serving.EngineClosed as e:
            for c in choices:
                c.request.cancel()
            raise ApiError(503, str(e)) from None
        return choices

    def _advance(self, c: Choice, event: Any) -> tuple[str, list[dict[str, Any]], str | None]:
        """One engine event of a choice -> (new final text, log-prob entries, finish reason or None)."""
        if isinstance(event, serving.Finished):
            reason = {"cancelled": "stop", "error": "error"}.get(event.reason, event.reason)
            if c.finish_reason is None:
                c.finish_reason = reason
                return c.text.flush(), [], reason
            return "", [], None
        if c.finish_reason is not None:  # stopped by a stop string; the engine frees the row next step
            return "", [], None
        c.tokens.append(event.token)
        entries = []
        if c.want_logprobs:
            entries = [_logprob_entry(self.codec, event.token, event.log_prob, event.top)]
            c.log_probs.extend(entries)
        if event.token in self.eos_ids:
            return "", entries, None  # the Finished("stop") that follows ends the choice
        text = c.text.add(event.token)
        if c.text.stopped:
            c.finish_reason = "stop"
            c.request.cancel()
            return text, entries, "stop"
        return text, entries, None

    def _finish_all(self, choices: list[Choice]) -> None:
        for c in choices:
            for event in c.request.events():
                self._advance(c, event)

    def _interleave(self, choices: list[Choice]) -> Iterator[tuple[Choice, str, list, str | None]]:
        """Every choice's progress as it happens (one thread per HTTP request reads its choices in turn)."""
        streams = {c.index: (c, c.request.events()) for c in choices}
        while streams:
            for index in list(streams):
                c, events = streams[index]
                try:
                    event = next(events)
                except StopIteration:
                    del streams[index]
                    continue
                text, entries, reason = self._advance(c, event)
                if text or entries or reason:
                    yield c, text, entries, reason
                if isinstance(event, serving.Finished):
                    del streams[index]

    def _echo(self, prompts: list[list[int]], top: int) -> list[list[dict[str, Any]]]:
        """Per prompt: a log-prob entry per prompt token given those before it (the first: none)."""
        scored = self.scorer.token_log_probs([(p[:1], p[1:]) for p in prompts if len(p) > 1], top=max(top, 1))
        out, it = [], iter(scored)
        for p in prompts:
            entries = [_logprob_entry(self.codec, p[0], None, ())]
            if len(p) > 1:
                logp, top_values, top_ids = next(it)
                entries += [
                    _logprob_entry(
                        self.codec,
                        t,
                        float(lp),
                        tuple(zip(ids[:top].tolist(), vals[:top].tolist(), strict=True)),
                    )  # fmt: skip
                    for t, lp, ids, vals in zip(p[1:], logp, top_ids, top_values, strict=True)
                ]
            out.append(entries)
        return out


def _chain(first, rest):
    yield first
    yield from rest


def _content(content: Any, field: str) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list) and all(isinstance(part, dict) for part in content):
        texts = []
        for k, part in enumerate(content):
            if part.get("type") != "text" or not isinstance(part.get("text"), str):
                raise _bad(f"{field}[{k}]", "only text parts are supported ({type: 'text', text: ...})")
            texts.append(part["text"])
        return "".join(texts)
    raise _bad(field, "expected a string or a list of text parts")


def _token_text(codec: Any, token: int) -> str:
    return codec.decode([int(token)])


def _logprob_entry(codec: Any, token: int, log_prob: float | None, top: tuple) -> dict[str, Any]:
    text = _token_text(codec, token)
    return {
        "token": text, "logprob": log_prob, "bytes": list(text.encode("utf-8")), "id": int(token),
        "top_logprobs": [
            {"token": _token_text(codec, t), "logprob": v, "bytes": list(_token_text(codec, t).encode("utf-8"))}
            for t, v in top
        ],
    }  # fmt: skip


def _completion_logprobs(entries: list[dict[str, Any]]) -> dict[str, Any]:
    """Chat-style entries -> the legacy completions `logprobs` object (tokens, token_logprobs,
    top_logprobs as {token: logprob} dicts, text_offset)."""
    offsets, at = [], 0
    for e in entries:
        offsets.append(at)
        at += len(e["token"])
    tops = []
    for e in entries:
        if e["logprob"] is None:
            tops.append(None)
            continue
        top: dict[str, float] = {}
        for alt in e["top_logprobs"]:
            top[alt["token"]] = max(top.get(alt["token"], float("-inf")), alt["logprob"])
        tops.append(top)
    return {
        "tokens": [e["token"] for e in entries],
        "token_logprobs": [e["logprob"] for e in entries],
        "top_logprobs": tops,
        "text_offset": offsets,
    }


def _usage(prompt_tokens: int, choices: list[Choice]) -> dict[str, int]:
    completion = sum(len(c.tokens) for c in choices)
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion,
        "total_tokens": prompt_tokens + completion,
    }
