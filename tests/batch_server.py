"""A loopback fake of two providers' batch APIs, on 127.0.0.1, for tests and the benchmark.

It speaks the real wire protocols that the official SDKs use:

- OpenAI: ``POST /v1/files`` (multipart, ``purpose=batch``), ``GET /v1/files/{id}/content``,
  ``POST /v1/batches``, ``GET /v1/batches/{id}``, ``POST /v1/batches/{id}/cancel``; a batch
  goes validating -> in_progress -> completed (or expired, or failed at validation); the
  output file holds ``{"id", "custom_id", "response": {"status_code", "request_id", "body"},
  "error"}`` lines, the error file the failed and expired ones.
- Anthropic: ``POST /v1/messages/batches``, ``GET /v1/messages/batches/{id}``,
  ``GET /v1/messages/batches/{id}/results`` (JSONL of ``{"custom_id", "result": {"type": ...}}``),
  ``processing_status`` in_progress -> ended.

The "model" is an instant echo (``echo: <last user text>``), so the tests measure the
batch machinery, never a model. Results come back shuffled. What happens is set per
server: ``polls_to_finish`` (status reads before a batch ends), ``outcome``
("completed", "expired" after ``finish_first`` requests, or "failed"), ``reject``
(refuse at creation with a 400), ``error_ids`` (requests answered with an error),
``fail_reads`` (the next N reads answer 500), ``unauthorized`` (every request 401).
Counters (``files_uploaded``, ``batches_created``, ``polls``) are what tests assert on.
"""

from __future__ import annotations

import email.parser
import json
import random
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


def _now_iso() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def echo_text(messages: list[dict[str, Any]]) -> str:
    for message in reversed(messages):
        if message.get("role") == "user":
            content = message.get("content")
            if isinstance(content, list):
                content = " ".join(b.get("text", "") for b in content if isinstance(b, dict))
            return f"echo: {content}"
    return "echo: (nothing)"


@dataclass
class Batch:
    id: str
    kind: str  # "openai" or "anthropic"
    requests: list[dict[str, Any]]
    input_file_id: str | None = None
    polls: int = 0
    status: str = "validating"
    output_file_id: str | None = None
    error_file_id: str | None = None
    errors: list[dict[str, Any]] = field(default_factory=list)
    results: list[dict[str, Any]] = field(default_factory=list)
    created_at: int = field(default_factory=lambda: int(time.time()))


class BatchServer:
    def __init__(self, *, polls_to_finish: int = 2, outcome: str = "completed", finish_first: int | None = None,
                 reject: str | None = None, error_ids: set[str] | None = None, seed: int = 0,
                 fail_reads: int = 0, unauthorized: bool = False) -> None:
        self.polls_to_finish = polls_to_finish
        self.outcome = outcome
        self.finish_first = finish_first
        self.reject = reject
        self.error_ids = error_ids or set()
        #: the next ``fail_reads`` status reads answer HTTP 500; ``unauthorized``: every request answers 401
        self.fail_reads = fail_reads
        self.unauthorized = unauthorized
        self.rng = random.Random(seed)
        self.lock = threading.Lock()
        self.files: dict[str, bytes] = {}
        self.batches: dict[str, Batch] = {}
        self.files_uploaded = 0
        self.batches_created = 0
        self.polls = 0
        self.requests_received = 0
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    # -- lifecycle
    @property
    def root(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    @property
    def openai_base_url(self) -> str:
        return self.root + "/v1"

    def __enter__(self) -> BatchServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()

    # -- the fake provider's work
    def _answer_openai(self, line: dict[str, Any]) -> dict[str, Any]:
        body = line["body"]
        text = echo_text(body.get("messages", []))
        return {"id": "chatcmpl-" + line["custom_id"][:12], "object": "chat.completion", "created": int(time.time()),
                "model": body.get("model", "echo"),
                "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop",
                             "logprobs": None}],
                "usage": {"prompt_tokens": len(json.dumps(body.get("messages", []))) // 4,
                          "completion_tokens": len(text.split()), "total_tokens": 0}}

    def _answer_anthropic(self, params: dict[str, Any]) -> dict[str, Any]:
        text = echo_text(params.get("messages", []))
        return {"id": "msg_" + str(self.rng.randrange(10**9)), "type": "message", "role": "assistant",
                "model": params.get("model", "echo"), "content": [{"type": "text", "text": text}],
                "stop_reason": "end_turn", "stop_sequence": None,
                "usage": {"input_tokens": len(json.dumps(params.get("messages", []))) // 4,
                          "output_tokens": len(text.split())}}

    def _finish(self, batch: Batch) -> None:
        """Decide every request's fate once, when the batch ends; results in shuffled order."""
        order = list(range(len(batch.requests)))
        ran = len(order) if self.outcome != "expired" else min(self.finish_first or 0, len(order))
        results = []
        for i, request in enumerate(batch.requests):
            cid = request["custom_id"]
            if i >= ran:
                results.append({"custom_id": cid, "fate": "expired"})
            elif cid in self.error_ids:
                results.append({"custom_id": cid, "fate": "errored"})
            else:
                answer = (self._answer_openai(request) if batch.kind == "openai"
                          else self._answer_anthropic(request["params"]))
                results.append({"custom_id": cid, "fate": "succeeded", "answer": answer})
        self.rng.shuffle(results)
        batch.results = results
        if batch.kind == "openai":
            batch.status = "expired" if self.outcome == "expired" else "completed"
            ok = [r for r in results if r["fate"] == "succeeded"]
            bad = [r for r in results if r["fate"] != "succeeded"]
            if ok:
                batch.output_file_id = self._store_file(b"".join(
                    json.dumps({"id": f"batch_req_{n}", "custom_id": r["custom_id"],
                                "response": {"status_code": 200, "request_id": f"req_{n}", "body": r["answer"]},
                                "error": None}).encode() + b"\n" for n, r in enumerate(ok)))
            if bad:
                lines = []
                for n, r in enumerate(bad):
                    if r["fate"] == "expired":
                        line = {"id": f"batch_req_e{n}", "custom_id": r["custom_id"], "response": None,
                                "error": {"code": "batch_expired",
                                          "message": "This request could not be executed before the completion "
                                                     "window expired."}}
                    else:
                        line = {"id": f"batch_req_e{n}", "custom_id": r["custom_id"],
                                "response": {"status_code": 400, "request_id": f"req_e{n}",
                                             "body": {"error": {"message": "Invalid 'max_tokens'",
                                                                "type": "invalid_request_error"}}},
                                "error": None}
                    lines.append(json.dumps(line).encode() + b"\n")
                batch.error_file_id = self._store_file(b"".join(lines))
        else:
            batch.status = "ended"

    def _store_file(self, data: bytes) -> str:
        file_id = f"file-{len(self.files) + 1:06d}"
        self.files[file_id] = data
        return file_id

    def _advance(self, batch: Batch) -> None:
        with self.lock:
            self.polls += 1
            batch.polls += 1
            if batch.status in ("completed", "expired", "failed", "ended", "cancelled"):
                return
            if batch.kind == "openai" and batch.status == "validating":
                if self.outcome == "failed":
                    batch.status = "failed"
                    batch.errors = [{"code": "invalid_request", "line": 1, "param": "body.model",
                                     "message": "Model 'echo' is not supported by the Batch API."}]
                    return
                batch.status = "in_progress"
                return
            if batch.polls >= self.polls_to_finish:
                self._finish(batch)

    def openai_batch(self, batch: Batch) -> dict[str, Any]:
        done = sum(1 for r in batch.results if r["fate"] == "succeeded")
        failed = len(batch.results) - done
        now = int(time.time())
        return {"id": batch.id, "object": "batch", "endpoint": "/v1/chat/completions",
                "errors": {"object": "list", "data": batch.errors} if batch.errors else None,
                "input_file_id": batch.input_file_id, "completion_window": "24h", "status": batch.status,
                "output_file_id": batch.output_file_id, "error_file_id": batch.error_file_id,
                "created_at": batch.created_at, "in_progress_at": now, "expires_at": batch.created_at + 86400,
                "finalizing_at": None, "completed_at": now if batch.status == "completed" else None,
                "failed_at": now if batch.status == "failed" else None,
                "expired_at": now if batch.status == "expired" else None,
                "cancelling_at": None, "cancelled_at": None,
                "request_counts": {"total": len(batch.requests), "completed": done, "failed": failed},
                "metadata": None}

    def anthropic_batch(self, batch: Batch) -> dict[str, Any]:
        fates = [r["fate"] for r in batch.results]
        ended = batch.status == "ended"
        return {"id": batch.id, "type": "message_batch", "processing_status": "ended" if ended else "in_progress",
                "request_counts": {"processing": 0 if ended else len(batch.requests),
                                   "succeeded": fates.count("succeeded"), "errored": fates.count("errored"),
                                   "canceled": 0, "expired": fates.count("expired")},
                "ended_at": _now_iso() if ended else None, "created_at": _now_iso(), "expires_at": _now_iso(),
                "archived_at": None, "cancel_initiated_at": None,
                "results_url": f"{self.root}/v1/messages/batches/{batch.id}/results" if ended else None}

    def anthropic_results(self, batch: Batch) -> bytes:
        out = []
        for r in batch.results:
            if r["fate"] == "succeeded":
                result: dict[str, Any] = {"type": "succeeded", "message": r["answer"]}
            elif r["fate"] == "errored":
                result = {"type": "errored", "error": {"type": "error", "error": {
                    "type": "invalid_request_error", "message": "max_tokens: must be greater than 0"}}}
            else:
                result = {"type": "expired"}
            out.append(json.dumps({"custom_id": r["custom_id"], "result": result}).encode() + b"\n")
        return b"".join(out)

    # -- HTTP
    def _handler(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: object) -> None:
                return None

            def _reply(self, status: int, body: Any, content_type: str = "application/json") -> None:
                data = body if isinstance(body, bytes) else json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _error(self, status: int, message: str, anthropic: bool = False) -> None:
                if anthropic:
                    self._reply(status, {"type": "error", "error": {"type": "invalid_request_error",
                                                                    "message": message}})
                else:
                    self._reply(status, {"error": {"message": message, "type": "invalid_request_error",
                                                   "param": None, "code": None}})

            def _body(self) -> bytes:
                return self.rfile.read(int(self.headers.get("Content-Length", 0)))

            def do_POST(self) -> None:  # noqa: N802
                raw = self._body()
                path = self.path.split("?")[0]
                if server.unauthorized:
                    return self._error(401, "invalid x-api-key", anthropic="messages" in path)
                if path == "/v1/files":
                    message = email.parser.BytesParser().parsebytes(
                        f"Content-Type: {self.headers['Content-Type']}\r\n\r\n".encode() + raw)
                    parts = {p.get_param("name", header="content-disposition"): p.get_payload(decode=True)
                             for p in message.get_payload()}
                    if parts.get("purpose") != b"batch" or not parts.get("file"):
                        return self._error(400, "purpose must be 'batch' and a file is required")
                    with server.lock:
                        server.files_uploaded += 1
                        file_id = server._store_file(parts["file"])
                    return self._reply(200, {"id": file_id, "object": "file", "bytes": len(parts["file"]),
                                             "created_at": int(time.time()), "filename": "requests.jsonl",
                                             "purpose": "batch", "status": "processed"})
                if path == "/v1/batches":
                    body = json.loads(raw)
                    data = server.files.get(body.get("input_file_id", ""))
                    if data is None:
                        return self._error(404, "No such File object")
                    if server.reject:
                        return self._error(400, server.reject)
                    lines = [json.loads(line) for line in data.splitlines() if line.strip()]
                    ids = [line.get("custom_id") for line in lines]
                    if len(set(ids)) != len(ids) or any(line.get("url") != body.get("endpoint") for line in lines):
                        return self._error(400, "custom_id values must be unique and every url the endpoint")
                    with server.lock:
                        server.batches_created += 1
                        server.requests_received += len(lines)
                        batch = Batch(f"batch_{len(server.batches) + 1:06d}", "openai", lines,
                                      input_file_id=body["input_file_id"])
                        server.batches[batch.id] = batch
                    return self._reply(200, server.openai_batch(batch))
                if path == "/v1/messages/batches":
                    body = json.loads(raw)
                    requests = body.get("requests") or []
                    ids = [r.get("custom_id", "") for r in requests]
                    bad = [i for i in ids if not (1 <= len(i) <= 64 and all(c.isalnum() or c in "_-" for c in i))]
                    if server.reject or bad or len(set(ids)) != len(ids):
                        return self._error(400, server.reject or "requests: custom_id must be unique, "
                                           "1-64 characters of [a-zA-Z0-9_-]", anthropic=True)
                    with server.lock:
                        server.batches_created += 1
                        server.requests_received += len(requests)
                        batch = Batch(f"msgbatch_{len(server.batches) + 1:06d}", "anthropic", requests,
                                      status="in_progress")
                        server.batches[batch.id] = batch
                    return self._reply(200, server.anthropic_batch(batch))
                return self._error(404, f"no route {path}")

            def do_GET(self) -> None:  # noqa: N802
                path = self.path.split("?")[0]
                parts = path.strip("/").split("/")
                with server.lock:
                    fail, server.fail_reads = server.fail_reads > 0, max(server.fail_reads - 1, 0)
                if fail:
                    return self._error(500, "internal server error", anthropic="messages" in path)
                if parts[:2] == ["v1", "batches"] and len(parts) == 3 and parts[2] in server.batches:
                    batch = server.batches[parts[2]]
                    server._advance(batch)
                    return self._reply(200, server.openai_batch(batch))
                if parts[:2] == ["v1", "files"] and len(parts) == 4 and parts[3] == "content":
                    data = server.files.get(parts[2])
                    if data is None:
                        return self._error(404, "No such File object")
                    return self._reply(200, data, "application/octet-stream")
                if parts[:3] == ["v1", "messages", "batches"] and len(parts) >= 4 and parts[3] in server.batches:
                    batch = server.batches[parts[3]]
                    if len(parts) == 5 and parts[4] == "results":
                        if batch.status != "ended":
                            return self._error(400, "batch is still processing", anthropic=True)
                        return self._reply(200, server.anthropic_results(batch), "application/binary")
                    server._advance(batch)
                    return self._reply(200, server.anthropic_batch(batch))
                return self._error(404, f"no route {path}")

        return Handler
