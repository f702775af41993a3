"""A minimal OpenAI-style chat-completions endpoint on 127.0.0.1 for the judge tests: a real HTTP server that
the official `openai` client talks to, answering each request with `answer(user_message)` after the HTTP
statuses in `failures` (per distinct user message), or always failing with `status_always` (or for the messages
in `fail_on` only). `n` choices are answered `answer(message) [j]`, with token usage. It records the
Authorization header and how often each message was asked."""

from __future__ import annotations

import http.server
import json
import threading
from collections.abc import Callable


class Endpoint(http.server.ThreadingHTTPServer):
    def __init__(self, answer: Callable[[str], str], failures=(), status_always: int | None = None,
                 fail_on=()):  # fmt: skip
        super().__init__(("127.0.0.1", 0), _Handler)
        self.answer = answer
        self.failures = list(failures)
        self.status_always = status_always
        self.fail_on = set(fail_on)
        self.seen: dict[str, int] = {}
        self.auth: list[str] = []
        self.lock = threading.Lock()
        self._thread = threading.Thread(target=self.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/v1"

    def __enter__(self) -> Endpoint:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.shutdown()
        self.server_close()


class _Handler(http.server.BaseHTTPRequestHandler):
    def log_message(self, *args):  # quiet
        pass

    def do_POST(self):  # noqa: N802 - http.server's naming
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        user = body["messages"][-1]["content"]
        server: Endpoint = self.server
        with server.lock:
            server.auth.append(self.headers.get("Authorization", ""))
            n = server.seen[user] = server.seen.get(user, 0) + 1
        status = server.status_always or (server.failures[n - 1] if n <= len(server.failures) else 200)
        if user in server.fail_on:
            status = 400
        if status != 200:
            self._send(status, {"error": {"message": "try again", "type": "server_error"}})
            return
        k = int(body.get("n") or 1)
        texts = [server.answer(user) + (f" [{j}]" if k > 1 else "") for j in range(k)]
        choices = [{"index": j, "finish_reason": "stop", "message": {"role": "assistant", "content": t}}
                   for j, t in enumerate(texts)]  # fmt: skip
        usage = {
            "prompt_tokens": 1,
            "completion_tokens": sum(len(t.split()) for t in texts),
            "total_tokens": 1,
        }
        self._send(200, {"id": "c1", "object": "chat.completion", "created": 0, "model": body["model"],
                         "choices": choices, "usage": usage})  # fmt: skip

    def _send(self, status, payload):
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)
