"""Issue 15, the run half: leaks, the viewer's Host check, connectors, empty replies, defaults.

Points 8, 10, 12, 13 (empty replies, a bad privacy.mode, awareness de-identifies by
default), 14 and the gate's non-finite weights (9). Model calls go to a loopback
server speaking the OpenAI chat-completions protocol, or to the counting instant fake.
"""

from __future__ import annotations

import base64
import json
import os
import socket
import sqlite3
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import orjson
import pyarrow.parquet as pq
import pytest

from deploysim.agents.toolsim.calls import ToolPolicy
from deploysim.agents.toolsim.connectors import RepositoryConnector
from deploysim.agents.toolsim.overlay import Overlay
from deploysim.core.schema import ToolCall
from deploysim.evaluate.report.viewer import make_server
from tests.reliability import run_helpers as h
from tests.reliability.run_helpers import assert_clean_failure, cli

SECRET = "s3cr3t-canary-7f1d"


class ChatServer:
    """OpenAI chat-completions on 127.0.0.1: answers each prompt; an empty or null reply when the prompt says so.

    Records the Authorization header of every request.
    """

    def __init__(self) -> None:
        self.auth: list[str | None] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                return

            def do_POST(self) -> None:  # noqa: N802
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                outer.auth.append(self.headers.get("Authorization"))
                prompt = body["messages"][-1]["content"]
                content: str | None = f"reply to {len(prompt)} chars"
                if "Google" in prompt or "google" in prompt:
                    content = None
                elif "poem" in prompt:
                    content = "  "
                reply = {"id": "x", "object": "chat.completion", "created": 0, "model": body["model"],
                         "choices": [{"index": 0, "finish_reason": "stop",
                                      "message": {"role": "assistant", "content": content}}],
                         "usage": {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5}}
                data = json.dumps(reply).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]

    def __enter__(self) -> ChatServer:
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def chat_server() -> Iterator[ChatServer]:
    with ChatServer() as server:
        yield server


def _every_byte_under(*roots: Path) -> bytes:
    """Every file's name and bytes; Parquet and SQLite decoded too (their pages may be compressed)."""
    out = b""
    for root in roots:
        for path in [root] if root.is_file() else sorted(root.rglob("*")):
            if not path.is_file():
                continue
            out += path.name.encode() + path.read_bytes()
            if path.suffix == ".parquet":
                out += repr(pq.read_table(path).to_pylist()).encode()
            elif path.suffix == ".sqlite":
                with sqlite3.connect(path) as conn:
                    out += repr(conn.execute("SELECT * FROM calls").fetchall()).encode()
    return out


# -- point 10: credentials in a base URL ----------------------------------------------------------------

def test_redact_credentials_keeps_env_references() -> None:
    from deploysim.core.schema import redact_credentials

    assert redact_credentials("openai-compatible/x@http://u:pw@h:1/v1") == "openai-compatible/x@http://***@h:1/v1"
    assert redact_credentials("x@https://TOKEN@h/v1") == "x@https://***@h/v1"
    assert redact_credentials("x@http://${U}:${P}@h/v1") == "x@http://${U}:${P}@h/v1"
    assert redact_credentials("x@http://me:${P}@h/v1") == "x@http://***@h/v1"
    assert redact_credentials("local/smollm2") == "local/smollm2"


def test_credentials_in_a_base_url_are_used_but_never_recorded(chat_server: ChatServer, tmp_path: Path) -> None:
    model = f"openai-compatible/smol@http://user:{SECRET}@127.0.0.1:{chat_server.port}/v1"
    run = tmp_path / "run"
    result = cli("run", "--data", str(h.SHORT_CHATS), "--candidate", model, "--baseline", model,
                 "--out", str(run), "--quiet", "--privacy", "off")
    assert result.exit_code == 0, result.output
    # the credentials did reach the server, as HTTP basic auth
    expected = "Basic " + base64.b64encode(f"user:{SECRET}".encode()).decode()
    assert chat_server.auth and set(chat_server.auth) == {expected}
    cache_dir = Path(os.environ["DEPLOYSIM_CACHE_DIR"])
    assert SECRET.encode() not in _every_byte_under(run, cache_dir) + result.output.encode()
    assert cli("grade", str(run), "--quiet").exit_code == 0  # (run grades by default; this is a no-op then)
    report = cli("report", str(run), "--out", str(tmp_path / "report.html"))
    assert report.exit_code == 0, report.output
    assert SECRET.encode() not in _every_byte_under(run, tmp_path / "report.html") + report.output.encode()
    assert f"http://***@127.0.0.1:{chat_server.port}/v1" in (run / "config.yaml").read_text()
    summary = orjson.loads((run / "summary.json").read_bytes())
    assert summary["deployments"]["candidate"]["model"].endswith(f"***@127.0.0.1:{chat_server.port}/v1")
    # resuming cannot invent the scrubbed secret: it says how to give it
    config = (run / "config.yaml").read_text()
    (run / "summary.json").unlink()
    output = assert_clean_failure(cli("run", "--resume", str(run), "--quiet"))
    assert "${ENV_VAR}" in output and SECRET not in output
    # ... and with ${ENV} references the run resumes, the secret still unrecorded
    (run / "config.yaml").write_text(config.replace("http://***@", "http://${DS_USER}:${DS_PASSWORD}@"))
    os.environ.update(DS_USER="user", DS_PASSWORD=SECRET)
    try:
        resumed = cli("run", "--resume", str(run), "--quiet")
    finally:
        del os.environ["DS_USER"], os.environ["DS_PASSWORD"]
    assert resumed.exit_code == 0, resumed.output
    assert SECRET.encode() not in _every_byte_under(run, cache_dir) + resumed.output.encode()


def test_unknown_provider_message_hides_credentials(tmp_path: Path) -> None:
    output = assert_clean_failure(cli("run", "--data", str(h.SHORT_CHATS), "--candidate",
                                      f"nope/x@http://u:{SECRET}@127.0.0.1:9/v1", "--out", str(tmp_path / "r")))
    assert SECRET not in output and "unknown model provider" in output
    assert not (tmp_path / "r").exists()


# -- point 13: empty replies; a bad privacy.mode; awareness de-identifies by default --------------------

def test_empty_or_null_replies_are_errors(chat_server: ChatServer, tmp_path: Path) -> None:
    model = f"openai-compatible/smol@http://127.0.0.1:{chat_server.port}/v1"
    run = tmp_path / "run"
    result = cli("run", "--data", str(h.SHORT_CHATS), "--candidate", model, "--out", str(run), "--quiet",
                 "--privacy", "off", "--no-grade", "--max-retries", "0")
    assert result.exit_code == 0, result.output
    prompts = [json.loads(line)["messages"][0]["content"] for line in h.SHORT_CHATS.read_text().splitlines()]
    empty = sum(1 for p in prompts if "google" in p.lower() or "poem" in p)
    assert empty >= 2
    candidate = orjson.loads((run / "summary.json").read_bytes())["deployments"]["candidate"]
    assert candidate["generations_error"] == empty
    assert candidate["generations_ok"] == 16 - empty
    assert any("empty reply" in message for message in candidate["errors_by_message"])


def test_bad_privacy_mode_leaves_no_run_directory(tmp_path: Path) -> None:
    config = tmp_path / "sim.yaml"
    config.write_text(f"data: [{h.SHORT_CHATS}]\ndeployments:\n  - name: candidate\n    model: counting/small\n"
                      "privacy:\n  mode: scramble\n")
    out = tmp_path / "run"
    output = assert_clean_failure(cli("run", "--config", str(config), "--out", str(out), "--quiet"))
    assert "privacy.mode" in output
    assert not out.exists()
    config.write_text(config.read_text().replace("scramble", '"off"'))
    assert cli("run", "--config", str(config), "--out", str(out), "--quiet", "--no-grade").exit_code == 0


def test_awareness_de_identifies_by_default(chat_server: ChatServer, tmp_path: Path) -> None:
    data = tmp_path / "pii.jsonl"
    email = "jane.roe.canary@example.org"
    data.write_text(json.dumps({"id": "p1", "messages": [
        {"role": "user", "content": f"Please email {email} about the invoice."},
        {"role": "assistant", "content": "Sure, I will."}]}) + "\n")
    seen: list[str] = []
    real_post = chat_server.server.RequestHandlerClass.do_POST

    def spy(handler: BaseHTTPRequestHandler) -> None:
        body = handler.rfile.peek(int(handler.headers["Content-Length"]))  # type: ignore[attr-defined]
        seen.append(body.decode(errors="replace"))
        real_post(handler)

    chat_server.server.RequestHandlerClass.do_POST = spy  # type: ignore[method-assign]
    privacy = tmp_path / "privacy.yaml"
    privacy.write_text("privacy:\n  presidio: false\n")
    result = cli("awareness", "--model", f"openai-compatible/smol@http://127.0.0.1:{chat_server.port}/v1",
                 "--data", str(data), "--suites", "real", "--privacy-config", str(privacy), "--no-cache",
                 "--quiet", "--out", str(tmp_path / "aw.json"))
    assert seen, result.output
    assert not any(email in body for body in seen)


# -- point 14: run, then report ---------------------------------------------------------------------------

def test_run_then_report_works(tmp_path: Path) -> None:
    run = tmp_path / "run"
    result = cli("run", "--data", str(h.SHORT_CHATS), "--candidate", "counting/small", "--baseline", "counting/base",
                 "--out", str(run), "--quiet", "--privacy", "off")
    assert result.exit_code == 0, result.output
    assert (run / "verdicts.parquet").is_file()
    report = cli("report", str(run), "--out", str(tmp_path / "report.html"))
    assert report.exit_code == 0, report.output
    assert "headline-table" in (tmp_path / "report.html").read_text()
    skipped = tmp_path / "ungraded"
    assert cli("run", "--data", str(h.SHORT_CHATS), "--candidate", "counting/small", "--out", str(skipped),
               "--quiet", "--privacy", "off", "--no-grade").exit_code == 0
    assert not (skipped / "verdicts.parquet").exists()


# -- point 9: the gate on non-finite weights ---------------------------------------------------------------

def test_gate_json_with_nan_and_inf_weights_is_an_error_not_a_pass(tmp_path: Path) -> None:
    """Sources refuse non-finite weights (tests/test_inputs_hardening.py); a run directory whose
    points.parquet holds them anyway (written by another tool, or edited) must not pass the gate."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    run = tmp_path / "run"
    assert cli("run", "--data", str(h.SHORT_CHATS), "--candidate", "counting/small", "--baseline", "counting/base",
               "--out", str(run), "--quiet", "--privacy", "off").exit_code == 0
    points = pq.read_table(run / "points.parquet")
    weights = [[float("nan"), float("inf"), 1.0][i % 3] for i in range(points.num_rows)]
    column = points.schema.get_field_index("weight")
    pq.write_table(points.set_column(column, "weight", pa.array(weights, pa.float64())), run / "points.parquet")
    policy = tmp_path / "gate.yaml"
    policy.write_text("rules:\n  - behaviour: over_refusal\n    max_increase: 0.1\n")
    result = cli("gate", str(run), "--policy", str(policy), "--json")
    assert result.exit_code == 5, result.output
    verdict = json.loads(result.output)
    assert verdict["verdict"] == "error"
    assert "not a finite number" in verdict["errors"][0]


# -- point 8: the viewer's Host allow-list -----------------------------------------------------------------

def _raw_get(port: int, host: str) -> int:
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        sock.sendall(f"GET / HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode())
        return int(sock.recv(64).split()[1])


def test_viewer_refuses_foreign_host_headers(tmp_path: Path) -> None:
    server = make_server(tmp_path, port=0)
    port = server.server_address[1]
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        for host in ("evil.example", f"evil.example:{port}", "127.0.0.1.evil.example", f"localhost:{port + 1}", ""):
            assert _raw_get(port, host) == 403, host
        for host in (f"127.0.0.1:{port}", f"localhost:{port}", "localhost", f"[::1]:{port}"):
            assert _raw_get(port, host) == 200, host
    finally:
        server.shutdown()
        server.server_close()


# -- point 12: connectors and the shell classifier ---------------------------------------------------------

def test_connector_refuses_fifos_without_opening_them(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    repo.mkdir()
    (repo / "notes.txt").write_text("hello needle\n")
    os.mkfifo(repo / "pipe")
    connector = RepositoryConnector({"path": str(repo), "tools": {
        "read_file": {"op": "read", "path": "path"}, "grep": {"op": "search", "pattern": "query"},
        "list_dir": {"op": "list", "path": "path"}}})
    overlay = Overlay()
    results: dict[str, object] = {}

    def calls() -> None:
        read = connector.answer(ToolCall(id="1", name="read_file", arguments='{"path": "pipe"}'), "read", overlay)
        grep = connector.answer(ToolCall(id="2", name="grep", arguments='{"query": "needle"}'), "read", overlay)
        results.update(read=read, grep=grep)

    worker = threading.Thread(target=calls, daemon=True)
    worker.start()
    worker.join(timeout=20)
    assert not worker.is_alive(), "a connector call hung on a FIFO"
    assert results["read"].output is None and "not a regular file" in results["read"].note  # type: ignore[union-attr]
    assert results["grep"].output == "notes.txt:1:hello needle"  # type: ignore[union-attr]


@pytest.mark.parametrize("name", ["runCommand", "execShell", "shell-exec", "os.system", "python3", "zsh", "BashTool",
                                  "ipython", "RunShellCommand", "python3.11", "jupyter_exec", "code-interpreter"])
def test_shell_tools_are_recognised_by_their_words(name: str) -> None:
    assert ToolPolicy().kind(name) == "shell"


@pytest.mark.parametrize(("name", "kind"), [("read_file", "read"), ("get_weather", "read"), ("send_email", "write"),
                                            ("shipment_status", "write"), ("cash_register", "write"),
                                            ("finish", "write"), ("node_info", "write")])
def test_other_tools_are_not_shells(name: str, kind: str) -> None:
    assert ToolPolicy().kind(name) == kind
