"""An instrument for tests: an HTTP proxy on 127.0.0.1 in front of a real OpenAI-compatible server.

It counts and records every request, and can inject faults (429 with Retry-After,
500, replies slower than the client's timeout, broken JSON) chosen per request by a
test-supplied rule. The answers themselves always come from the real upstream model.
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

#: fault names a rule may return
FAULTS = ("429", "500", "slow", "broken_json")

FaultRule = Callable[[dict, int], str | None]


@dataclass
class Seen:
    prompt: str
    body_hash: str
    attempt: int
    outcome: str  # "ok" or a fault name
    at: float = 0.0
    body: dict = field(default_factory=dict)  # the whole request (messages, response_format, ...)


@dataclass
class ProxyLog:
    seen: list[Seen] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def forwarded_prompts(self) -> Counter[str]:
        with self.lock:
            return Counter(s.prompt for s in self.seen if s.outcome == "ok")

    def outcomes(self) -> Counter[str]:
        with self.lock:
            return Counter(s.outcome for s in self.seen)


def last_user_text(body: dict) -> str:
    for message in reversed(body.get("messages", [])):
        if message.get("role") == "user":
            content = message.get("content")
            return content if isinstance(content, str) else json.dumps(content)
    return ""


class LoopbackProxy:
    def __init__(self, upstream: str, rule: FaultRule | None = None, slow_s: float = 3.0) -> None:
        self.upstream = upstream.rstrip("/")
        self.rule = rule
        self.slow_s = slow_s
        self.log = ProxyLog()
        self._attempts: Counter[str] = Counter()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}/v1"

    def __enter__(self) -> LoopbackProxy:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()

    def _decide(self, body: dict, raw: bytes) -> tuple[str, int]:
        digest = hashlib.sha256(raw).hexdigest()
        with self.log.lock:
            self._attempts[digest] += 1
            attempt = self._attempts[digest]
        fault = self.rule(body, attempt) if self.rule else None
        with self.log.lock:
            self.log.seen.append(Seen(last_user_text(body), digest, attempt, fault or "ok", time.monotonic(),
                                      body))
        return fault or "ok", attempt

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: object) -> None:
                return None

            def _reply(self, status: int, body: bytes, headers: dict[str, str] | None = None) -> None:
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                for key, value in (headers or {}).items():
                    self.send_header(key, value)
                self.end_headers()
                try:
                    self.wfile.write(body)
                except (BrokenPipeError, ConnectionResetError):
                    pass

            def do_GET(self) -> None:  # noqa: N802
                with urllib.request.urlopen(proxy.upstream + self.path.removeprefix("/v1"), timeout=30) as r:
                    self._reply(r.status, r.read())

            def do_POST(self) -> None:  # noqa: N802
                raw = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                body = json.loads(raw)
                outcome, _ = proxy._decide(body, raw)
                if outcome == "429":
                    self._reply(429, b'{"error": {"message": "rate limited", "type": "rate_limit"}}',
                                {"Retry-After": "1"})
                    return
                if outcome == "500":
                    self._reply(500, b'{"error": {"message": "internal error"}}')
                    return
                if outcome == "slow":
                    time.sleep(proxy.slow_s)
                if outcome == "broken_json":
                    self._reply(200, b'{"id": "chatcmpl-1", "object": "chat.completion", "choices": [{"ind')
                    return
                request = urllib.request.Request(proxy.upstream + self.path.removeprefix("/v1"), data=raw,
                                                 headers={"Content-Type": "application/json"}, method="POST")
                try:
                    with urllib.request.urlopen(request, timeout=600) as r:
                        self._reply(r.status, r.read())
                except urllib.error.HTTPError as exc:
                    self._reply(exc.code, exc.read())

        return Handler
