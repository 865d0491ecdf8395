"""Canary: planted personal data must not reach a provider, the call cache or any run-directory file.

A loopback OpenAI-compatible server records every request body (an instrument: it
answers with one fixed chat completion). The fixture has 205 planted values of 11
kinds (tests/fixtures/privacy/make_canary.py); recall per kind is printed.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from deploysim.pipeline.config import SimConfig
from deploysim import run_simulation

FIXTURES = Path(__file__).parent / "fixtures" / "privacy"
REPLY = {
    "id": "chatcmpl-canary", "object": "chat.completion", "created": 0, "model": "canary",
    "choices": [{"index": 0, "message": {"role": "assistant", "content": "Sure, happy to help with that."},
                 "finish_reason": "stop"}],
    "usage": {"prompt_tokens": 10, "completion_tokens": 7, "total_tokens": 17},
}


class Recorder(BaseHTTPRequestHandler):
    bodies: list[bytes] = []

    def do_POST(self) -> None:  # noqa: N802 (http.server API)
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        Recorder.bodies.append(body)
        payload = json.dumps(REPLY).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture()
def recording_server() -> Iterator[tuple[str, list[bytes]]]:
    Recorder.bodies = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), Recorder)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/v1", Recorder.bodies
    finally:
        server.shutdown()
        server.server_close()


def planted() -> dict[str, list[str]]:
    return json.loads((FIXTURES / "planted.json").read_text())


def file_texts(root: Path) -> Iterator[tuple[str, str]]:
    """Every file under ``root`` as searchable text; Parquet decoded (its pages are compressed)."""
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        if path.suffix == ".parquet":
            yield str(path), json.dumps(pq.read_table(path).to_pylist(), ensure_ascii=False)
        else:
            yield str(path), path.read_bytes().decode("utf-8", errors="replace")


def forms(value: str) -> set[str]:
    """The value as written and as it appears inside JSON strings."""
    return {value, json.dumps(value)[1:-1], json.dumps(value, ensure_ascii=False)[1:-1]}


def leaks(values: dict[str, list[str]], haystacks: list[tuple[str, str]]) -> dict[str, list[tuple[str, str]]]:
    found: dict[str, list[tuple[str, str]]] = {}
    for kind, items in values.items():
        for value in items:
            for where, text in haystacks:
                if any(form in text for form in forms(value)):
                    found.setdefault(kind, []).append((value, where))
    return found


def run_canary(tmp_path: Path, base_url: str, bodies: list[bytes], privacy: dict[str, object] | None,
               data: Path = FIXTURES / "canary.jsonl", values: dict[str, list[str]] | None = None) -> dict[str, object]:
    cache = tmp_path / "cache" / "calls.sqlite"
    config = SimConfig(
        data=[str(data)],
        turn="all",
        deployments=[{"name": "candidate", "model": f"openai-compatible/canary@{base_url}", "concurrency": 2,
                      "max_retries": 0}],
        cache_path=str(cache),
        **({"privacy": privacy} if privacy is not None else {}),
    )
    out = tmp_path / "run"
    summary = run_simulation(config, out, show_progress=False)
    assert summary["reconciles"], summary
    haystacks = [(f"request {i}", b.decode("utf-8", errors="replace")) for i, b in enumerate(bodies)]
    haystacks += list(file_texts(out)) + list(file_texts(cache.parent))
    values = values if values is not None else planted()
    found = leaks(values, haystacks)
    print("\nrecall per kind (planted values absent from every request, cache and run file):")
    for kind, items in sorted(values.items()):
        leaked = {v for v, _ in found.get(kind, [])}
        print(f"  {kind:16} {len(items) - len(leaked):3d}/{len(items):3d}")
    return {"found": found, "requests": len(bodies), "values": values}


def test_fixture_is_big_enough() -> None:
    values = planted()
    assert sum(len(v) for v in values.values()) >= 200
    assert len(values) >= 10


def test_canary_nothing_planted_leaves(tmp_path: Path, recording_server: tuple[str, list[bytes]]) -> None:
    base_url, bodies = recording_server
    result = run_canary(tmp_path, base_url, bodies, {"mode": "surrogate", "presidio": False})
    assert result["requests"] > 0, "the recording server saw no request: the canary proves nothing"
    assert result["found"] == {}, {k: [v for v, _ in items][:3] for k, items in result["found"].items()}


def test_canary_detector_is_live(tmp_path: Path, recording_server: tuple[str, list[bytes]]) -> None:
    """The same run with privacy off must leak: otherwise the leak search itself is broken."""
    base_url, bodies = recording_server
    result = run_canary(tmp_path, base_url, bodies, {"mode": "off"})
    assert set(result["found"]) == set(result["values"])


def test_canary_placeholder_mode(tmp_path: Path, recording_server: tuple[str, list[bytes]]) -> None:
    base_url, bodies = recording_server
    result = run_canary(tmp_path, base_url, bodies, {"mode": "placeholder", "presidio": False})
    assert result["found"] == {}
    assert any(b"<EMAIL_1>" in body for body in bodies)


#: Issue 15 point 11: values that reached the provider with default settings before the recognizers were
#: tuned for recall. Every class is planted in a sentence of its own, as a user would write it.
RECALL_GAPS: dict[str, list[str]] = {
    "phone without separators": ["4155552671", "2125550198", "07700900461", "14155550123", "+14155552671"],
    "phone in a fictional or unassigned range": ["(555) 555-0134", "555-555-0188", "+1 555 555 0100",
                                                "07700 900123", "+44 7700 900987"],
    "test card with few distinct digits": ["4111 1111 1111 1111", "4242424242424242", "5555555555554444",
                                           "4000 0000 0000 0002", "3782 822463 10005"],
    "ssn without dashes": ["078051120", "219099999", "123456789", "536224567", "412789321"],
    "email with an internationalised domain": ["jose@correo.españa.es", "info@bücher.de", "user@例え.jp",
                                               "ana.lópez@ejemplo.com", "müller@straße.de"],
}
RECALL_TEMPLATES = {
    "phone without separators": "Please call me back on {} after six.",
    "phone in a fictional or unassigned range": "My direct line is {} if the portal fails.",
    "test card with few distinct digits": "The checkout rejected card {} with expiry 12/29.",
    "ssn without dashes": "For the W-9 my SSN is {} and my name is on file.",
    "email with an internationalised domain": "Send the receipt to {} please.",
}


def test_canary_recall_gaps_of_issue_15_are_closed_with_default_settings(
        tmp_path: Path, recording_server: tuple[str, list[bytes]]) -> None:
    data = tmp_path / "gaps.jsonl"
    with data.open("w") as handle:
        for kind, items in RECALL_GAPS.items():
            for i, value in enumerate(items):
                handle.write(json.dumps({"id": f"{kind}-{i}", "messages": [
                    {"role": "user", "content": RECALL_TEMPLATES[kind].format(value)},
                    {"role": "assistant", "content": "Thanks, noted."}]}, ensure_ascii=False) + "\n")
    base_url, bodies = recording_server
    result = run_canary(tmp_path, base_url, bodies, None, data, RECALL_GAPS)
    assert result["requests"] == sum(len(v) for v in RECALL_GAPS.values())
    assert result["found"] == {}, {k: [v for v, _ in items] for k, items in result["found"].items()}
